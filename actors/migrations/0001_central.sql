-- Central's state on PostgreSQL: what central keeps in redb on a single machine, shared here by
-- every central instance. The agents' signed sections are kept as they came (`body`, postcard)
-- and, for the host facts, hardware, OS, CPU and memory, as JSON (`doc`) for SQL; the host's placement,
-- its packages and its installed software are also kept as rows, for the reporting views and
-- for the console's filters.
-- Times are Unix seconds, as on the wire.

CREATE TABLE outpost.hosts (
    fingerprint   text PRIMARY KEY,          -- the certificate that reports for the host
    uuid          text NOT NULL,
    sequence      bigint NOT NULL,           -- the last report applied
    last_seen     bigint NOT NULL,
    fqdn          text NOT NULL DEFAULT '',
    site          text NOT NULL DEFAULT '',
    ou            text NOT NULL DEFAULT '',
    agent_version text NOT NULL DEFAULT '',
    status        text NOT NULL DEFAULT 'UNKNOWN',
    packages      integer NOT NULL DEFAULT 0,   -- Outpost packages it reported
    audit         text,                         -- its worst last audit (NULL: nothing audited)
    snapshot_expired boolean NOT NULL DEFAULT false,
    -- its last ten reports, newest first: sequence, when, the section kinds each carried
    recent_sequence bigint[] NOT NULL DEFAULT '{}',
    recent_at       bigint[] NOT NULL DEFAULT '{}',
    recent_kinds    text[] NOT NULL DEFAULT '{}'
);
CREATE INDEX hosts_fqdn ON outpost.hosts (lower(fqdn));
CREATE INDEX hosts_uuid ON outpost.hosts (lower(uuid));
CREATE INDEX hosts_site_status ON outpost.hosts (site, status);
CREATE INDEX hosts_last_seen ON outpost.hosts (last_seen);
CREATE INDEX hosts_order ON outpost.hosts (fqdn COLLATE "C", uuid COLLATE "C", fingerprint COLLATE "C");
CREATE INDEX hosts_status ON outpost.hosts (status);

CREATE TABLE outpost.sections (
    fingerprint text NOT NULL REFERENCES outpost.hosts ON DELETE CASCADE,
    kind        smallint NOT NULL,
    body        bytea NOT NULL,
    doc         jsonb,                      -- as JSON, for the kinds the reporting views read
    PRIMARY KEY (fingerprint, kind)
);

CREATE TABLE outpost.host_packages (
    fingerprint text NOT NULL REFERENCES outpost.hosts ON DELETE CASCADE,
    name        text NOT NULL,
    status      text NOT NULL,
    installed   text,
    target      text,
    reason      text,
    PRIMARY KEY (fingerprint, name)
);
CREATE INDEX host_packages_name ON outpost.host_packages (name, status);
CREATE INDEX host_packages_lower_name ON outpost.host_packages (lower(name));

CREATE TABLE outpost.host_software (
    fingerprint  text NOT NULL REFERENCES outpost.hosts ON DELETE CASCADE,
    name         text NOT NULL,
    version      text NOT NULL,
    publisher    text NOT NULL,
    source       text NOT NULL,
    product_code text
);
CREATE INDEX host_software_host ON outpost.host_software (fingerprint);
CREATE INDEX host_software_name ON outpost.host_software (lower(name), version);

CREATE TABLE outpost.enrolled (
    fingerprint text PRIMARY KEY,
    uuid        text NOT NULL,
    fqdn        text NOT NULL,
    issued      bigint NOT NULL,
    not_after   bigint NOT NULL
);
CREATE INDEX enrolled_uuid ON outpost.enrolled (lower(uuid));
CREATE INDEX enrolled_fqdn ON outpost.enrolled (lower(fqdn));

CREATE TABLE outpost.tokens (
    hash    bytea PRIMARY KEY,                -- BLAKE3 of the token: the token itself is never kept
    expires bigint NOT NULL,
    uses    integer NOT NULL
);

CREATE TABLE outpost.pending (
    uuid   text PRIMARY KEY,
    fqdn   text NOT NULL,
    since  bigint NOT NULL,
    record bytea NOT NULL
);

CREATE TABLE outpost.revoked (
    fingerprint text PRIMARY KEY,
    uuid        text NOT NULL,
    at          bigint NOT NULL
);

CREATE TABLE outpost.actions (
    nonce   bytea PRIMARY KEY,
    kind    text NOT NULL,
    issuer  text NOT NULL,
    relayed bigint NOT NULL,
    expires bigint NOT NULL,
    record  bytea NOT NULL                    -- the signed action and its targets
);

CREATE TABLE outpost.action_results (
    nonce       bytea NOT NULL REFERENCES outpost.actions ON DELETE CASCADE,
    fingerprint text NOT NULL,
    ok          boolean NOT NULL,
    message     text NOT NULL,
    seconds     double precision NOT NULL,    -- from relay to result
    PRIMARY KEY (nonce, fingerprint)
);

-- Central instances (each a process, named when it starts) and the agents connected to each:
-- a host is online while an instance seen in the last 30 s holds its connection.
CREATE TABLE outpost.instances (
    name text PRIMARY KEY,
    seen bigint NOT NULL
);

CREATE TABLE outpost.sessions (
    fingerprint text NOT NULL,
    instance    text NOT NULL,
    since       bigint NOT NULL,
    PRIMARY KEY (fingerprint, instance)
);

CREATE TABLE outpost.settings (
    sequence bigint PRIMARY KEY,
    signed   bytea NOT NULL
);

CREATE TABLE outpost.saved_queries (
    name        text PRIMARY KEY,
    description text NOT NULL DEFAULT '',
    sql         text NOT NULL,
    author      text NOT NULL,
    saved       bigint NOT NULL
);
