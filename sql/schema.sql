-- psra-bench baseline schema: the PSRA/LTSD tables before the performance migration.
--
-- Schema public holds exactly 20 indexes here (the spec's "Before: 20"), among them the
-- nine "existing indexes preserved" that the spec names. Bookkeeping of psra-bench itself
-- lives in schema psra_bench so it never changes that count.
-- Idempotent: every statement may run again on a database that already has it.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE SCHEMA IF NOT EXISTS psra_bench;
CREATE TABLE IF NOT EXISTS psra_bench.schema_migrations (
    name        text PRIMARY KEY,
    state       text NOT NULL CHECK (state IN ('applying', 'applied', 'reverting')),
    checksum    text NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now()
);
-- Which of a migration's indexes it created itself ('created': `migrate down` drops it) and which
-- were already there before `migrate up` ('preexisting': `migrate down` leaves it). A 'created' row
-- is written before the build starts, so a build killed half-way is still known to be the migration's.
CREATE TABLE IF NOT EXISTS psra_bench.migration_indexes (
    migration   text NOT NULL,
    index_name  text NOT NULL,
    origin      text NOT NULL CHECK (origin IN ('created', 'preexisting')),
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (migration, index_name)
);
CREATE TABLE IF NOT EXISTS psra_bench.seed_runs (
    id          bigserial PRIMARY KEY,
    seed        bigint NOT NULL,
    verdicts    bigint NOT NULL,
    checksum    text NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now()
);

-- HS 2022 nomenclature (6,940 rows). Indexes: hs_codes_pkey, idx_hs_codes_code,
-- idx_hs_codes_chapter, idx_hs_codes_level  (4)
CREATE TABLE IF NOT EXISTS hs_codes (
    id           serial PRIMARY KEY,
    code         varchar(10) NOT NULL,
    description  text NOT NULL,
    parent       varchar(10),
    level        smallint NOT NULL,
    section      varchar(5),
    chapter      char(2),
    version      varchar(10) NOT NULL DEFAULT 'HS2022',
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS idx_hs_codes_code ON hs_codes (code);
CREATE INDEX IF NOT EXISTS idx_hs_codes_chapter ON hs_codes (chapter);
CREATE INDEX IF NOT EXISTS idx_hs_codes_level ON hs_codes (level);

-- Product-specific rules. Indexes: psra_rules_pkey, idx_psra_rules_rule_id,
-- idx_psra_rules_agreement_code  (3)
CREATE TABLE IF NOT EXISTS psra_rules (
    id              uuid PRIMARY KEY,
    rule_id         varchar(32) NOT NULL,
    version         integer NOT NULL DEFAULT 1,
    agreement_code  varchar(16) NOT NULL,
    agreement_name  text NOT NULL,
    title           text NOT NULL,
    hs_chapter      char(2) NOT NULL,
    hs_heading      char(4),
    hs_subheading   char(6),
    jurisdictions   text[] NOT NULL,
    effective_from  date NOT NULL,
    effective_to    date,
    priority        integer NOT NULL DEFAULT 0,
    supersedes      text[] NOT NULL DEFAULT '{}',
    payload         jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS idx_psra_rules_rule_id ON psra_rules (rule_id);
CREATE INDEX IF NOT EXISTS idx_psra_rules_agreement_code ON psra_rules (agreement_code);

-- Assessment verdicts. Indexes: psra_verdicts_pkey, idx_psra_verdicts_evaluation_id,
-- idx_psra_verdicts_request_id, idx_psra_verdicts_rule_id, idx_psra_verdicts_tenant_id  (5)
-- No foreign keys: verdicts are bulk-loaded with COPY and kept as history even when a
-- rule or tenant is removed.
CREATE TABLE IF NOT EXISTS psra_verdicts (
    id                  uuid PRIMARY KEY,
    evaluation_id       uuid NOT NULL,
    request_id          uuid NOT NULL,
    rule_id             varchar(32) NOT NULL,
    tenant_id           uuid NOT NULL,
    status              varchar(20) NOT NULL,
    confidence          double precision NOT NULL,
    citations           jsonb NOT NULL DEFAULT '[]',
    reasons             jsonb NOT NULL DEFAULT '[]',
    notes               text,
    ledger_reference    text,
    input_payload       jsonb,
    input_hash          varchar(64) NOT NULL,
    processing_time_ms  integer,
    rules_evaluated     integer,
    agreement_code      varchar(16) NOT NULL,
    hs_subheading       char(6) NOT NULL,
    effective_date      date NOT NULL,
    export_country      char(2) NOT NULL,
    import_country      char(2) NOT NULL,
    lineage_required    boolean NOT NULL DEFAULT false,
    decided_at          timestamptz NOT NULL,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS idx_psra_verdicts_evaluation_id ON psra_verdicts (evaluation_id);
CREATE INDEX IF NOT EXISTS idx_psra_verdicts_request_id ON psra_verdicts (request_id);
CREATE INDEX IF NOT EXISTS idx_psra_verdicts_rule_id ON psra_verdicts (rule_id);
CREATE INDEX IF NOT EXISTS idx_psra_verdicts_tenant_id ON psra_verdicts (tenant_id);

-- Tenants (the companies using the service). Index: tenants_pkey  (1)
CREATE TABLE IF NOT EXISTS tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    country     char(2) NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Suppliers of a tenant. Indexes: suppliers_pkey, idx_suppliers_tenant_id  (2)
CREATE TABLE IF NOT EXISTS suppliers (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    name        text NOT NULL,
    country     char(2) NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_suppliers_tenant_id ON suppliers (tenant_id);

-- Long-term supplier declarations (LTSD): a supplier declares the origin of a product for
-- a period. Indexes: supplier_declarations_pkey, idx_supplier_declarations_supplier_id  (2)
CREATE TABLE IF NOT EXISTS supplier_declarations (
    id              uuid PRIMARY KEY,
    supplier_id     uuid NOT NULL REFERENCES suppliers (id),
    hs_subheading   char(6) NOT NULL,
    origin_country  char(2) NOT NULL,
    agreement_code  varchar(16) NOT NULL,
    valid_from      date NOT NULL,
    valid_to        date NOT NULL,
    status          varchar(20) NOT NULL DEFAULT 'active',
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_supplier_declarations_supplier_id ON supplier_declarations (supplier_id);

-- Transactional outbox towards the tenant's ERP. Indexes: erp_outbox_pkey,
-- erp_outbox_saga_id_key, idx_erp_outbox_tenant_id  (3)
CREATE TABLE IF NOT EXISTS erp_outbox (
    id                     uuid PRIMARY KEY,
    saga_id                uuid NOT NULL UNIQUE,
    tenant_id              uuid NOT NULL,
    idempotency_key        text NOT NULL,
    event_type             text NOT NULL,
    payload                jsonb NOT NULL,
    status                 varchar(20) NOT NULL DEFAULT 'pending',
    attempts               integer NOT NULL DEFAULT 0,
    next_run_at            timestamptz,
    last_error             text,
    result_payload         jsonb,
    processing_started_at  timestamptz,
    processed_at           timestamptz,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_erp_outbox_tenant_id ON erp_outbox (tenant_id);
