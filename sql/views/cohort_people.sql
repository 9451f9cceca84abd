-- cohort_people: one row per person and cohort they are in. Person-level, like people.
SELECT c.cohort, p.* EXCLUDE (pseudo_id)
FROM cohort_membership c
JOIN person p ON p.pseudo_id = c.pseudo_id
