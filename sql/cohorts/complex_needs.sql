-- complex_needs: people whose needs cut across services.
--   at least 3 long-term-condition groups, or
--   at least 2 emergency admissions in 12 months, or
--   at least 10 distinct drugs with at least one emergency admission.
-- Reads `features` (one row per person in the population at $as_of).
-- Returns one row per flagged person; pseudo_id is required, other columns are kept.
SELECT
  pseudo_id,
  practice_code,
  ltc_groups_12m,
  distinct_drugs_12m,
  emergency_admissions_12m
FROM features
WHERE ltc_groups_12m >= 3
   OR emergency_admissions_12m >= 2
   OR (distinct_drugs_12m >= 10 AND emergency_admissions_12m >= 1)
