-- The outcome at $as_of: an emergency spell admitted in [$as_of, $next12_end).
-- For training, $as_of is T0 = A - 365, so the window is [T0, A).
SELECT DISTINCT a.pseudo_id, 1 AS emergency_admission_next_12m
FROM admissions a
JOIN admission_methods m ON a.admission_method = m.code
WHERE m.category = 'emergency'
  AND a.admission_date >= $as_of
  AND a.admission_date < $next12_end
