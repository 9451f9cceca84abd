-- feedback_outcomes: care teams' outcomes recorded up to A, by team, outcome and
-- service (run folder file feedback_people.parquet: one row per person, team,
-- outcome and service). Pre-aggregated: counts perturbed by their cell key.
SELECT
  team,
  outcome,
  service_code,
  count(*) AS people,
  sum(cell_record_key(pseudo_id)) AS __people_key
FROM feedback_people
GROUP BY team, outcome, service_code
