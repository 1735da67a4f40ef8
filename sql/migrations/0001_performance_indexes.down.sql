-- Rolls back 0001_performance_indexes: drops its 26 indexes (46 -> 20), each on its own and CONCURRENTLY.

DROP INDEX CONCURRENTLY IF EXISTS idx_psra_verdicts_lineage_required;
DROP INDEX CONCURRENTLY IF EXISTS idx_psra_verdicts_status_confidence;
DROP INDEX CONCURRENTLY IF EXISTS idx_psra_verdicts_confidence;
DROP INDEX CONCURRENTLY IF EXISTS idx_psra_verdicts_reasons;
DROP INDEX CONCURRENTLY IF EXISTS idx_psra_verdicts_citations;
DROP INDEX CONCURRENTLY IF EXISTS idx_psra_verdicts_input_hash;
DROP INDEX CONCURRENTLY IF EXISTS idx_psra_verdicts_tenant_effective;
DROP INDEX CONCURRENTLY IF EXISTS idx_psra_verdicts_effective_date;
DROP INDEX CONCURRENTLY IF EXISTS idx_psra_verdicts_trade_route;
DROP INDEX CONCURRENTLY IF EXISTS idx_psra_verdicts_agreement_hs;
DROP INDEX CONCURRENTLY IF EXISTS idx_psra_verdicts_tenant_status;
DROP INDEX CONCURRENTLY IF EXISTS idx_psra_verdicts_tenant_created;
DROP INDEX CONCURRENTLY IF EXISTS idx_psra_verdicts_created_at_desc;
DROP INDEX CONCURRENTLY IF EXISTS idx_psra_rules_payload;
DROP INDEX CONCURRENTLY IF EXISTS idx_psra_rules_jurisdictions;
DROP INDEX CONCURRENTLY IF EXISTS idx_psra_rules_priority;
DROP INDEX CONCURRENTLY IF EXISTS idx_psra_rules_active;
DROP INDEX CONCURRENTLY IF EXISTS idx_psra_rules_effective_dates;
DROP INDEX CONCURRENTLY IF EXISTS idx_psra_rules_hs_hierarchy;
DROP INDEX CONCURRENTLY IF EXISTS idx_psra_rules_agreement_hs_chapter;
DROP INDEX CONCURRENTLY IF EXISTS idx_hs_codes_chapter_level;
DROP INDEX CONCURRENTLY IF EXISTS idx_hs_codes_version;
DROP INDEX CONCURRENTLY IF EXISTS idx_hs_codes_section_level;
DROP INDEX CONCURRENTLY IF EXISTS idx_hs_codes_parent;
DROP INDEX CONCURRENTLY IF EXISTS idx_hs_codes_code_description;
DROP INDEX CONCURRENTLY IF EXISTS idx_hs_codes_description_trgm;
