-- Prescribing features over W12 = [w12_start, as_of), at each date of feature_dates,
-- in one pass over prescriptions.
--   distinct_drugs_12m: chemical substances (the first 9 characters of the BNF code:
--     chemical_substance(bnf_code) is substr(bnf_code, 1, 9), held inline as Utf8View
--     so that no row's string is copied for the GROUP BY)
--   ltc_groups_12m: groups of reference/ltc_bnf_groups.csv (the table ltc_bnf_groups)
--     matched by BNF prefix. Its prefixes are at most 9 characters long, so a
--     substance's group is its codes' group. ltc_group_bit() is the bit of a code's
--     group (0 for none, as ltc_group() is its name): OR-ed over a person's substances
--     and counted, the number of distinct groups, with no GROUP BY per group.
-- Plain GROUP BYs, no count(DISTINCT): each substance is one row of `substances`.
-- feature_date() gives each row the date whose 12-month window holds it (the dates'
-- windows do not overlap), or NULL: no join to feature_dates.
-- Keyed on `person`, the run's integer person key (see validate/patients.sql).
-- Money is summed in whole micropounds (nic x 10^6, rounded): sums of whole numbers
-- below 2^53 (9 billion pounds) are exact in any order, so rx_cost_12m is the same
-- however the rows reach the aggregate, run after run; floating-point sums are not.
WITH dated AS (
  SELECT feature_date(p.issue_date, $feature_dates, 365) AS as_of,
         p.person, chemical_substance(p.bnf_code) AS substance, p.items,
         round(p.nic * 1e6) AS nic_micropounds
  FROM prescriptions p
),
substances AS (
  SELECT as_of, person, substance, sum(items) AS items,
         sum(nic_micropounds) AS nic_micropounds
  FROM dated
  WHERE as_of IS NOT NULL
  GROUP BY as_of, person, substance
)
SELECT
  as_of,
  person,
  sum(items)                                   AS rx_items_12m,
  sum(nic_micropounds) / 1e6                   AS rx_cost_12m,
  count(*)                                     AS distinct_drugs_12m,
  bit_count(bit_or(ltc_group_bit(substance)))  AS ltc_groups_12m
FROM substances
GROUP BY as_of, person
