-- An example workload for `psra-bench indexes advise` and notebook 06: what a team's dashboard and
-- assessment service might send, with $n placeholders where the application passes values (replay
-- draws them from the columns' pg_stats). A statement given twice counts as two calls.

-- Compliance dashboard: verdicts of one status in a recent window. Neither the baseline schema nor
-- the spec's 26 indexes has psra_verdicts (status, created_at): the advice should add it.
SELECT count(*) FROM psra_verdicts WHERE status = $1 AND created_at >= $2;
SELECT count(*) FROM psra_verdicts WHERE status = $1 AND created_at >= $2;
SELECT count(*) FROM psra_verdicts WHERE status = $1 AND created_at >= $2;

-- A tenant's latest verdicts (the spec's idx_psra_verdicts_tenant_created serves it when present).
SELECT id, rule_id, status, confidence, created_at
  FROM psra_verdicts WHERE tenant_id = $1 ORDER BY created_at DESC LIMIT $2;

-- One verdict by its evaluation (the baseline's unique index serves it).
SELECT id, status, confidence, reasons FROM psra_verdicts WHERE evaluation_id = $1;

-- The rules of an agreement for an HS chapter.
SELECT rule_id, title, priority FROM psra_rules WHERE agreement_code = $1 AND hs_chapter = $2;

-- An HS code's description.
SELECT code, description FROM hs_codes WHERE code = $1;
