-- Service outcome evaluation, step 1: each patient's first enrolment in each
-- service that started in the two years before $as_of. (The index date, where risk
-- is scored and comparison patients matched, is the first day of the start's
-- month.) Opted-out patients are not in `services` at all.
SELECT
  service_code,
  pseudo_id,
  min(start_date) AS start_date
FROM services
GROUP BY service_code, pseudo_id
HAVING min(start_date) >= $w24_start AND min(start_date) < $as_of
