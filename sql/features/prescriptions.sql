-- Prescribing features over W12 = [$w12_start, $as_of).
-- distinct_drugs_12m counts chemical substances (the first 9 characters of the BNF
-- code); ltc_groups_12m counts groups of ltc_bnf_groups matched by BNF prefix.
WITH w12 AS (
  SELECT pseudo_id, bnf_code, items, nic
  FROM prescriptions
  WHERE issue_date >= $w12_start AND issue_date < $as_of
),
drugs AS (
  SELECT DISTINCT pseudo_id, bnf_code FROM w12
),
-- Prefixes come in a few lengths: match on each length by equality (a hash join),
-- not by LIKE over every pair.
ltc AS (
  SELECT d.pseudo_id, count(DISTINCT g.ltc_group) AS ltc_groups_12m
  FROM drugs d
  CROSS JOIN (SELECT DISTINCT length(bnf_prefix) AS len FROM ltc_bnf_groups) l
  JOIN ltc_bnf_groups g ON substr(d.bnf_code, 1, l.len) = g.bnf_prefix
  GROUP BY d.pseudo_id
),
totals AS (
  SELECT pseudo_id, sum(items) AS rx_items_12m, sum(nic) AS rx_cost_12m
  FROM w12
  GROUP BY pseudo_id
),
substances AS (
  SELECT pseudo_id, count(DISTINCT substr(bnf_code, 1, 9)) AS distinct_drugs_12m
  FROM drugs
  GROUP BY pseudo_id
)
SELECT t.pseudo_id, t.rx_items_12m, t.rx_cost_12m, s.distinct_drugs_12m, l.ltc_groups_12m
FROM totals t
JOIN substances s ON s.pseudo_id = t.pseudo_id
LEFT JOIN ltc l ON l.pseudo_id = t.pseudo_id
