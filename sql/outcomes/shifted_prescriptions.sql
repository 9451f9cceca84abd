-- Prescriptions of each index episode in the year before its index date, moved
-- forward by shift_days (see shifted_patients.sql).
SELECT
  CAST(e.episode AS VARCHAR) AS pseudo_id,
  e.episode AS person,
  CAST(CAST(r.issue_date AS INT) + e.shift_days AS DATE) AS issue_date,
  r.bnf_code,
  r.items,
  r.quantity,
  r.nic
FROM prescriptions r
JOIN index_episodes e ON e.person = r.person
WHERE r.issue_date >= e.year_start
  AND r.issue_date < e.index_date
