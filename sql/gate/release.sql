-- The list one care team receives from the re-identification gate
-- (pipeline/src/gate.rs). Built into the binary; a job cannot override it.
--
--   cohort          the run's cohort file (pseudo_id, ...)
--   features        the run's features: the population at A, with the practice at A
--   scores          the run's risk tiers and the model's reasons
--   team_practices  the ODS codes of the practices the team serves
--   vault           identities; holds no one with an opt-out
--
-- One row per cohort member registered at A with one of the team's practices. Rows
-- whose person is not in the vault have in_vault = false; rows whose practice in the
-- run is not the practice the gate's own vault records have practice_confirmed =
-- false (the run's files are the analyst's: a practice there decides nothing on its
-- own). The gate counts both and releases only the others, without those two columns.
-- Minimum fields only.
WITH members AS (
    SELECT DISTINCT pseudo_id FROM cohort
)
SELECT
    v.nhs_number,
    v.given_name,
    v.family_name,
    v.date_of_birth,
    v.address,
    v.postcode,
    v.phone,
    f.practice_code,
    s.tier,
    s.reason_1,
    s.reason_2,
    s.reason_3,
    v.pseudo_id IS NOT NULL AS in_vault,
    coalesce(v.practice_code = f.practice_code, false) AS practice_confirmed
FROM members m
JOIN features f ON f.pseudo_id = m.pseudo_id
JOIN team_practices t ON t.practice_code = f.practice_code
JOIN scores s ON s.pseudo_id = m.pseudo_id
LEFT JOIN vault v ON v.pseudo_id = m.pseudo_id
ORDER BY f.practice_code, s.risk DESC, v.nhs_number
