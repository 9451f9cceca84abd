-- people: one row per person in the population at A. Person-level: commissioners
-- get only aggregates of it (count, sum, avg), grouped by its dimensions, with small
-- numbers suppressed and counts rounded. No identifier and no date is in it.
SELECT * EXCLUDE (pseudo_id) FROM person
