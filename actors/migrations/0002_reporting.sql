-- The reporting schema: stable views for operators (psql, Grafana's PostgreSQL source, BI tools).
-- Columns are only ever added here, never renamed or removed; the tables under them may change.
-- The role `outpost_reporting` (made by central when it may) reads these views and nothing else.

CREATE SCHEMA reporting;

CREATE VIEW reporting.hosts AS
SELECT h.uuid,
       h.fqdn,
       h.site,
       h.ou,
       h.status,
       h.agent_version,
       to_timestamp(h.last_seen) AS last_seen,
       os.doc -> 'Os' ->> 'name' AS os_name,
       os.doc -> 'Os' ->> 'version' AS os_version,
       os.doc -> 'Os' ->> 'arch' AS os_arch,
       h.sequence AS report_sequence,
       h.fingerprint AS certificate,
       EXISTS (SELECT 1 FROM outpost.revoked r WHERE r.fingerprint = h.fingerprint) AS revoked
FROM outpost.hosts h
LEFT JOIN outpost.sections os ON os.fingerprint = h.fingerprint AND os.kind = 2;

CREATE VIEW reporting.host_packages AS
SELECT h.uuid,
       h.fqdn,
       h.site,
       p.name AS package,
       p.status,
       p.installed AS installed_version,
       p.target AS target_version,
       p.reason
FROM outpost.host_packages p
JOIN outpost.hosts h USING (fingerprint);

CREATE VIEW reporting.software AS
SELECT h.uuid,
       h.fqdn,
       h.site,
       s.name,
       s.version,
       s.publisher,
       s.source,
       s.product_code
FROM outpost.host_software s
JOIN outpost.hosts h USING (fingerprint);

CREATE VIEW reporting.hardware AS
SELECT h.uuid,
       h.fqdn,
       h.site,
       hw.doc -> 'Hardware' ->> 'vendor' AS vendor,
       hw.doc -> 'Hardware' ->> 'product' AS product,
       hw.doc -> 'Hardware' ->> 'serial' AS serial,
       hw.doc -> 'Hardware' ->> 'bios' AS bios,
       cpu.doc -> 'Cpu' ->> 'model' AS cpu_model,
       (cpu.doc -> 'Cpu' ->> 'threads')::integer AS cpu_threads,
       (mem.doc ->> 'Memory')::bigint AS memory_bytes
FROM outpost.hosts h
LEFT JOIN outpost.sections hw ON hw.fingerprint = h.fingerprint AND hw.kind = 1
LEFT JOIN outpost.sections cpu ON cpu.fingerprint = h.fingerprint AND cpu.kind = 3
LEFT JOIN outpost.sections mem ON mem.fingerprint = h.fingerprint AND mem.kind = 4;

CREATE VIEW reporting.actions AS
SELECT encode(a.nonce, 'hex') AS action,
       a.kind,
       a.issuer,
       to_timestamp(a.relayed) AS relayed,
       to_timestamp(a.expires) AS expires,
       h.fqdn,
       h.uuid,
       r.ok,
       r.message,
       r.seconds
FROM outpost.actions a
LEFT JOIN outpost.action_results r ON r.nonce = a.nonce
LEFT JOIN outpost.hosts h ON h.fingerprint = r.fingerprint;
