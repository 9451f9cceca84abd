-- service_outcomes: the evaluation of each service in `services` (run folder file
-- service_outcomes.parquet, written by the run's outcomes stage). One row per
-- service and outcome (emergency_admissions, bed_days): patients enrolled, those
-- matched (treated) and their comparison patients (controls), the match rate, rates
-- per 1,000 person-years in the 365 days before and after the start date, and the
-- difference in differences with its 95% interval. Pre-aggregated.
SELECT
  service_code,
  outcome,
  enrolled,
  treated,
  controls,
  match_rate,
  treated_before,
  treated_after,
  control_before,
  control_after,
  did,
  did_ci_low,
  did_ci_high
FROM service_outcomes_table
