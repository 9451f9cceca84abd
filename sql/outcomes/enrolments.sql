-- Service outcome evaluation, step 1: each patient's first enrolment in each
-- service that started in the two years before $as_of, with the first day of its
-- month as the index date at which risk is scored and comparison patients are
-- matched. Opted-out patients are not in `services` at all.
SELECT
  service_code,
  pseudo_id,
  min(start_date) AS start_date,
  CAST(date_trunc('month', min(start_date)) AS DATE) AS index_date
FROM services
GROUP BY service_code, pseudo_id
HAVING min(start_date) >= $w24_start AND min(start_date) < $as_of
