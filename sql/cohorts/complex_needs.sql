-- complex_needs: people at high risk whose needs cut across services.
--   risk tier very_high or high, and at least one of:
--   3 or more long-term-condition groups, 10 or more distinct drugs,
--   2 or more emergency admissions in 12 months.
-- Reads `features` and `scores` (one row each per person in the population at $as_of).
-- Returns one row per flagged person; pseudo_id is required, other columns are kept.
SELECT
  f.pseudo_id,
  f.practice_code,
  s.tier,
  s.risk,
  f.ltc_groups_12m,
  f.distinct_drugs_12m,
  f.emergency_admissions_12m
FROM features f
JOIN scores s ON s.pseudo_id = f.pseudo_id
WHERE s.tier IN ('very_high', 'high')
  AND (f.ltc_groups_12m >= 3
       OR f.distinct_drugs_12m >= 10
       OR f.emergency_admissions_12m >= 2)
