-- golioth-sync schema (DESIGN §3). All ids uuid, all times timestamptz; every tenant-owned table
-- carries organization_id and an index that starts with it.

CREATE TABLE organizations (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL,
    slug        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE organization_members (
    organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    user_id         uuid NOT NULL,
    role            text NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT organization_members_pair UNIQUE (organization_id, user_id)
);
CREATE INDEX organization_members_user_idx ON organization_members (user_id);

-- The platform's device registry. Soft delete = tombstone (deleted_at).
CREATE TABLE devices (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id   uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name              text NOT NULL,
    device_type       text,
    model             text,
    serial_number     text,
    hardware_ids      text[] NOT NULL DEFAULT '{}',
    tags              text[] NOT NULL DEFAULT '{}',
    enabled           boolean NOT NULL DEFAULT true,
    status            text NOT NULL DEFAULT 'unknown'
                      CHECK (status IN ('online', 'offline', 'warning', 'error', 'unknown')),
    last_seen         timestamptz,
    last_seen_online  timestamptz,
    battery_level     double precision,
    signal_strength   double precision,
    firmware_version  text,
    location          jsonb,
    metadata          jsonb NOT NULL DEFAULT '{}',
    cohort_id         text,
    blueprint_id      text,
    version           bigint NOT NULL DEFAULT 1,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    deleted_at        timestamptz
);
CREATE INDEX devices_org_idx ON devices (organization_id, id);
CREATE INDEX devices_org_name_idx ON devices (organization_id, name) WHERE deleted_at IS NULL;
CREATE INDEX devices_hardware_ids_idx ON devices USING gin (hardware_ids);

-- Every real update bumps version and updated_at, so edits by the platform's own application
-- (which writes this table directly) are seen exactly like ours. A no-op update bumps nothing.
CREATE FUNCTION devices_bump_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW IS NOT DISTINCT FROM OLD THEN
        RETURN NEW;
    END IF;
    NEW.version := OLD.version + 1;
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;
CREATE TRIGGER devices_bump_version BEFORE UPDATE ON devices
    FOR EACH ROW EXECUTE FUNCTION devices_bump_version();

-- One Golioth integration (project) per row. config = non-secret settings; credentials = the
-- AES-256-GCM envelope of the API key and webhook secrets.
CREATE TABLE device_services (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id        uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name                   text NOT NULL,
    service_type           text NOT NULL DEFAULT 'golioth' CHECK (service_type = 'golioth'),
    config                 jsonb NOT NULL DEFAULT '{}',
    credentials            bytea,
    is_active              boolean NOT NULL DEFAULT true,
    sync_enabled           boolean NOT NULL DEFAULT false,
    sync_interval_seconds  integer NOT NULL DEFAULT 900 CHECK (sync_interval_seconds >= 60),
    next_sync_at           timestamptz,
    last_sync_at           timestamptz,
    last_sync_status       text,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT device_services_org_name UNIQUE (organization_id, name)
);
CREATE INDEX device_services_due_idx ON device_services (next_sync_at)
    WHERE sync_enabled AND is_active;

-- The link between a local device and its Golioth twin, with the merge base.
CREATE TABLE device_service_assignments (
    id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id         uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    device_id               uuid NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    service_id              uuid NOT NULL REFERENCES device_services(id) ON DELETE CASCADE,
    external_device_id      text,
    sync_status             text NOT NULL DEFAULT 'pending'
                            CHECK (sync_status IN ('pending', 'synced', 'conflict', 'error')),
    base                    jsonb,
    base_remote_updated_at  timestamptz,
    last_sync               timestamptz,
    last_seen_run_id        uuid,
    last_error              text,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT assignments_device_service UNIQUE (device_id, service_id),
    CONSTRAINT assignments_service_external UNIQUE (service_id, external_device_id)
);
CREATE INDEX assignments_org_idx ON device_service_assignments (organization_id, service_id);

-- Durable sync jobs, claimed with FOR UPDATE SKIP LOCKED and leases.
CREATE TABLE sync_runs (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id   uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    service_id        uuid NOT NULL REFERENCES device_services(id) ON DELETE CASCADE,
    operation         text NOT NULL
                      CHECK (operation IN ('import', 'export', 'bidirectional', 'device_refresh')),
    params            jsonb NOT NULL DEFAULT '{}',
    status            text NOT NULL DEFAULT 'queued'
                      CHECK (status IN ('queued', 'running', 'completed', 'completed_with_errors',
                                        'failed', 'cancelled')),
    phase             text,
    cursor            jsonb,
    stats             jsonb NOT NULL DEFAULT '{}',
    attempt           integer NOT NULL DEFAULT 0,
    max_attempts      integer NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    run_after         timestamptz NOT NULL DEFAULT now(),
    lease_owner       text,
    lease_expires_at  timestamptz,
    requested_by      uuid,
    error             text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz
);
CREATE INDEX sync_runs_org_idx ON sync_runs (organization_id, service_id, created_at DESC);
CREATE INDEX sync_runs_claim_idx ON sync_runs (run_after) WHERE status IN ('queued', 'running');
-- At most one queued-or-running full run per service.
CREATE UNIQUE INDEX sync_runs_one_active_full ON sync_runs (service_id)
    WHERE status IN ('queued', 'running') AND operation <> 'device_refresh';
-- A device_refresh run is unique per (service, device) while queued.
CREATE UNIQUE INDEX sync_runs_one_queued_refresh ON sync_runs (service_id, (params->>'device_id'))
    WHERE status = 'queued' AND operation = 'device_refresh';

-- Audit trail, partitioned by month; the default partition means no row is ever rejected.
CREATE TABLE golioth_sync_log (
    id               uuid NOT NULL DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL,
    service_id       uuid,
    run_id           uuid,
    device_id        uuid,
    operation        text NOT NULL,
    status           text NOT NULL,
    details          jsonb NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE golioth_sync_log_default PARTITION OF golioth_sync_log DEFAULT;
CREATE INDEX golioth_sync_log_org_idx ON golioth_sync_log (organization_id, created_at DESC);
CREATE INDEX golioth_sync_log_service_idx ON golioth_sync_log (service_id, created_at DESC);
CREATE INDEX golioth_sync_log_run_idx ON golioth_sync_log (run_id);

-- Create the monthly partitions covering [month of p_from, + p_months). Rows that already sit in
-- the default partition for such a month are moved into the new partition, so creation never
-- fails. Returns the number of partitions created.
CREATE FUNCTION golioth_sync_log_ensure_partitions(p_from timestamptz, p_months integer)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    m_start timestamptz;
    m_end   timestamptz;
    part    text;
    created integer := 0;
BEGIN
    FOR i IN 0 .. greatest(p_months, 1) - 1 LOOP
        m_start := date_trunc('month', p_from AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                   + make_interval(months => i);
        m_end   := m_start + interval '1 month';
        part    := format('golioth_sync_log_y%sm%s',
                          to_char(m_start AT TIME ZONE 'UTC', 'YYYY'),
                          to_char(m_start AT TIME ZONE 'UTC', 'MM'));
        CONTINUE WHEN to_regclass(part) IS NOT NULL;
        EXECUTE format('CREATE TABLE %I (LIKE golioth_sync_log INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
        EXECUTE format('WITH moved AS (DELETE FROM golioth_sync_log_default
                                       WHERE created_at >= %L AND created_at < %L RETURNING *)
                        INSERT INTO %I SELECT * FROM moved', m_start, m_end, part);
        EXECUTE format('ALTER TABLE golioth_sync_log ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                       part, m_start, m_end);
        created := created + 1;
    END LOOP;
    RETURN created;
END;
$$;

-- Drop monthly partitions that end at or before p_before. Returns how many were dropped.
CREATE FUNCTION golioth_sync_log_drop_partitions(p_before timestamptz)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    dropped integer := 0;
BEGIN
    FOR r IN
        SELECT c.relname AS name,
               to_timestamp(substring(c.relname from 'y(\d{4})m(\d{2})$') || '01', 'YYYYMMDD')
                   AT TIME ZONE 'UTC' AS month_start
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relname = 'golioth_sync_log' AND c.relname ~ '^golioth_sync_log_y\d{4}m\d{2}$'
    LOOP
        IF (r.month_start::timestamp AT TIME ZONE 'UTC') + interval '1 month' <= p_before THEN
            EXECUTE format('DROP TABLE %I', r.name);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    RETURN dropped;
END;
$$;

SELECT golioth_sync_log_ensure_partitions(now(), 3);

-- Conflicts a person (or a policy) must decide. At most one pending row per (device, service, field).
CREATE TABLE device_conflicts (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id      uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    service_id           uuid NOT NULL REFERENCES device_services(id) ON DELETE CASCADE,
    device_id            uuid REFERENCES devices(id) ON DELETE CASCADE,
    external_device_id   text,
    field_name           text NOT NULL,
    conflict_type        text NOT NULL
                         CHECK (conflict_type IN ('concurrent_modification', 'delete_vs_modify',
                                                  'identity', 'first_sync_mismatch')),
    base_value           jsonb,
    local_value          jsonb,
    remote_value         jsonb,
    local_updated_at     timestamptz,
    remote_updated_at    timestamptz,
    detected_run_id      uuid,
    resolution_status    text NOT NULL DEFAULT 'pending'
                         CHECK (resolution_status IN ('pending', 'resolved', 'auto_resolved', 'superseded')),
    resolution_strategy  text,
    resolved_value       jsonb,
    resolved_by          uuid,
    resolved_at          timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX device_conflicts_org_idx ON device_conflicts (organization_id, resolution_status, created_at DESC);
CREATE UNIQUE INDEX device_conflicts_one_pending ON device_conflicts (device_id, service_id, field_name)
    WHERE resolution_status = 'pending' AND device_id IS NOT NULL;
CREATE UNIQUE INDEX device_conflicts_one_pending_remote ON device_conflicts (service_id, external_device_id, field_name)
    WHERE resolution_status = 'pending' AND device_id IS NULL;

-- Every webhook delivery, stored first under its idempotency key.
CREATE TABLE webhook_deliveries (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id     uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    service_id          uuid NOT NULL REFERENCES device_services(id) ON DELETE CASCADE,
    delivery_key        text NOT NULL,
    received_at         timestamptz NOT NULL DEFAULT now(),
    content_type        text,
    event_type          text,
    device_external_id  text,
    status              text NOT NULL
                        CHECK (status IN ('processed', 'duplicate', 'unmatched', 'rejected', 'failed')),
    payload             jsonb,
    error               text,
    CONSTRAINT webhook_deliveries_key UNIQUE (service_id, delivery_key)
);
CREATE INDEX webhook_deliveries_org_idx ON webhook_deliveries (organization_id, received_at DESC);
CREATE INDEX webhook_deliveries_received_idx ON webhook_deliveries (received_at);

-- Device data received through Pipelines.
CREATE TABLE device_telemetry (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id  uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    device_id        uuid NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    service_id       uuid NOT NULL REFERENCES device_services(id) ON DELETE CASCADE,
    delivery_id      uuid,
    path             text NOT NULL,
    recorded_at      timestamptz NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now(),
    data             jsonb NOT NULL
);
CREATE INDEX device_telemetry_device_idx ON device_telemetry (device_id, recorded_at DESC);
CREATE INDEX device_telemetry_org_idx ON device_telemetry (organization_id, recorded_at DESC);
