-- The spec's performance migration: 26 indexes (20 -> 46 in schema public).
-- Each statement runs on its own, outside a transaction, so CONCURRENTLY never locks writers.
-- psra-bench's migration runner executes these one by one (one statement per ';' line end).

-- hs_codes (6)
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_hs_codes_description_trgm ON hs_codes USING gin (description gin_trgm_ops);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_hs_codes_code_description ON hs_codes (code, description);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_hs_codes_parent ON hs_codes (parent) WHERE parent IS NOT NULL;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_hs_codes_section_level ON hs_codes (section, level) WHERE section IS NOT NULL;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_hs_codes_version ON hs_codes (version);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_hs_codes_chapter_level ON hs_codes (chapter, level) WHERE chapter IS NOT NULL;

-- psra_rules (7)
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_psra_rules_agreement_hs_chapter ON psra_rules (agreement_code, hs_chapter);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_psra_rules_hs_hierarchy ON psra_rules (hs_chapter, hs_heading, hs_subheading);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_psra_rules_effective_dates ON psra_rules (effective_from, effective_to);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_psra_rules_active ON psra_rules (effective_from) WHERE effective_to IS NULL;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_psra_rules_priority ON psra_rules (priority DESC);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_psra_rules_jurisdictions ON psra_rules USING gin (jurisdictions);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_psra_rules_payload ON psra_rules USING gin (payload);

-- psra_verdicts (13)
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_psra_verdicts_created_at_desc ON psra_verdicts (created_at DESC);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_psra_verdicts_tenant_created ON psra_verdicts (tenant_id, created_at DESC);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_psra_verdicts_tenant_status ON psra_verdicts (tenant_id, status);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_psra_verdicts_agreement_hs ON psra_verdicts (agreement_code, hs_subheading);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_psra_verdicts_trade_route ON psra_verdicts (export_country, import_country);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_psra_verdicts_effective_date ON psra_verdicts (effective_date);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_psra_verdicts_tenant_effective ON psra_verdicts (tenant_id, effective_date DESC);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_psra_verdicts_input_hash ON psra_verdicts (input_hash);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_psra_verdicts_citations ON psra_verdicts USING gin (citations);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_psra_verdicts_reasons ON psra_verdicts USING gin (reasons);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_psra_verdicts_confidence ON psra_verdicts (confidence DESC);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_psra_verdicts_status_confidence ON psra_verdicts (status, confidence DESC);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_psra_verdicts_lineage_required ON psra_verdicts (lineage_required) WHERE lineage_required = true;
