-- high_cost: the top 5% of the population by total_cost_12m (ties by pseudo_id).
-- Off by default: clinical need leads, cost is a choice. Add "high_cost" to
-- [cohorts] include to use it.
SELECT pseudo_id, practice_code, total_cost_12m
FROM (
  SELECT
    pseudo_id,
    practice_code,
    total_cost_12m,
    row_number() OVER (ORDER BY total_cost_12m DESC, pseudo_id) AS cost_rank,
    count(*) OVER () AS population
  FROM features
) ranked
WHERE cost_rank <= ceil(0.05 * population)
