-- The change list one care team receives from the re-identification gate
-- (`reidentify --changes`, pipeline/src/gate.rs): who is new on the team's list since
-- the team's previous release of this cohort, and who has left it. Built into the
-- binary; a job cannot override it.
--
--   cohort, features, scores        the run being released
--   previous_cohort,                the run of the team's previous release of this
--   previous_features,              cohort (named by the audit log)
--   previous_scores
--   team_practices                  the ODS codes of the practices the team serves
--   vault                           identities; holds no one with an opt-out
--
-- A team's list at a run is the cohort's people registered at A with one of the
-- team's practices (as in release.sql). change = 'entered': on the list now, not on
-- the previous one, with release.sql's minimum fields. change = 'left': on the previous
-- list, not on this one (no longer flagged, or now at a practice the team does not
-- serve): only what the team needs to take them off their list (NHS number, name,
-- date of birth, the practice they were listed at, the tier they had). People on both
-- lists are not repeated. Rows whose person is not in the vault (opted out since) have
-- in_vault = false, and entrants whose practice in the run is not the one the vault
-- records have practice_confirmed = false (as in release.sql): the gate counts them and
-- names nobody of them. (A leaver's practice is the previous run's, which the vault,
-- refreshed since, may no longer hold: a leaver is named as the previous release
-- listed them.)
--
-- arrow_cast(NULL, 'Utf8'): a plain VARCHAR cast would make a Utf8View column and turn
-- the union's text columns into views; lists keep release.sql's types.
WITH listed_now AS (
    SELECT DISTINCT c.pseudo_id, f.practice_code
    FROM cohort c
    JOIN features f ON f.pseudo_id = c.pseudo_id
    JOIN team_practices t ON t.practice_code = f.practice_code
),
listed_before AS (
    SELECT DISTINCT c.pseudo_id, f.practice_code
    FROM previous_cohort c
    JOIN previous_features f ON f.pseudo_id = c.pseudo_id
    JOIN team_practices t ON t.practice_code = f.practice_code
),
entered AS (
    SELECT n.pseudo_id, n.practice_code
    FROM listed_now n
    LEFT JOIN listed_before b ON b.pseudo_id = n.pseudo_id
    WHERE b.pseudo_id IS NULL
),
departed AS (
    SELECT b.pseudo_id, b.practice_code
    FROM listed_before b
    LEFT JOIN listed_now n ON n.pseudo_id = b.pseudo_id
    WHERE n.pseudo_id IS NULL
)
SELECT * EXCLUDE (sort_risk)
FROM (
    SELECT
        'entered' AS change,
        v.nhs_number,
        v.given_name,
        v.family_name,
        v.date_of_birth,
        v.address,
        v.postcode,
        v.phone,
        e.practice_code,
        s.tier,
        s.reason_1,
        s.reason_2,
        s.reason_3,
        ps.tier AS previous_tier,
        s.risk AS sort_risk,
        v.pseudo_id IS NOT NULL AS in_vault,
        coalesce(v.practice_code = e.practice_code, false) AS practice_confirmed
    FROM entered e
    JOIN scores s ON s.pseudo_id = e.pseudo_id
    LEFT JOIN previous_scores ps ON ps.pseudo_id = e.pseudo_id
    LEFT JOIN vault v ON v.pseudo_id = e.pseudo_id
    UNION ALL
    SELECT
        'left' AS change,
        v.nhs_number,
        v.given_name,
        v.family_name,
        v.date_of_birth,
        arrow_cast(NULL, 'Utf8') AS address,
        arrow_cast(NULL, 'Utf8') AS postcode,
        arrow_cast(NULL, 'Utf8') AS phone,
        d.practice_code,
        arrow_cast(NULL, 'Utf8') AS tier,
        arrow_cast(NULL, 'Utf8') AS reason_1,
        arrow_cast(NULL, 'Utf8') AS reason_2,
        arrow_cast(NULL, 'Utf8') AS reason_3,
        ps.tier AS previous_tier,
        ps.risk AS sort_risk,
        v.pseudo_id IS NOT NULL AS in_vault,
        true AS practice_confirmed
    FROM departed d
    JOIN previous_scores ps ON ps.pseudo_id = d.pseudo_id
    LEFT JOIN vault v ON v.pseudo_id = d.pseudo_id
) AS changes
ORDER BY change, practice_code, sort_risk DESC, nhs_number
