-- service_outcomes: the evaluation of each service in `services` (run folder files
-- service_outcomes.parquet and service_people.parquet, written by the run's service
-- evaluation). One row per service and outcome (emergency_admissions, bed_days):
-- patients enrolled, those matched (treated) and their comparison patients
-- (controls), the match rate, rates per 1,000 person-years in the 365 days before and
-- after the start date, the difference in differences with its 95% interval, the
-- placebo difference in differences (the year before the start against the year
-- before that: it should be near 0), the largest |standardised mean difference| of
-- the matching variables before and after matching, and warnings as 0/1 flags (match
-- rate under 80%, an |SMD| of 0.1 or more after matching, a placebo interval
-- excluding 0, an interval too wide to detect a halving of the comparison patients'
-- rate after the start; NULL in runs made before that flag existed). Pre-aggregated: each count is perturbed by the cell key of its own
-- people, the match rate is recomputed from the protected counts. (The per-variable
-- balance is in service_balance.parquet, for analysts.)
WITH keys AS (
  SELECT
    service_code,
    sum(CASE WHEN "group" = 'enrolled' THEN cell_record_key(pseudo_id) END) AS __enrolled_key,
    sum(CASE WHEN "group" = 'treated' THEN cell_record_key(pseudo_id) END) AS __treated_key,
    sum(CASE WHEN "group" = 'control' THEN cell_record_key(pseudo_id) END) AS __controls_key
  FROM service_people
  GROUP BY service_code
)
SELECT
  o.service_code,
  o.outcome,
  o.enrolled,
  o.treated,
  o.controls,
  o.match_rate,
  o.treated_before,
  o.treated_after,
  o.control_before,
  o.control_after,
  o.did,
  o.did_ci_low,
  o.did_ci_high,
  o.placebo_did,
  o.placebo_ci_low,
  o.placebo_ci_high,
  o.max_smd_before,
  o.max_smd_after,
  o.warning_low_match_rate,
  o.warning_imbalance,
  o.warning_pre_trend,
  o.warning_imprecise,
  k.__enrolled_key,
  k.__treated_key,
  k.__controls_key
FROM service_outcomes_table o
LEFT JOIN keys k ON k.service_code = o.service_code
