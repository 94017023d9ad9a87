-- Package and software rows also carry what their host is found and ordered by, so that the two
-- questions operators ask most of a large fleet read an index instead of every host:
-- * packages waiting (NEED-INSTALL, NEED-UPGRADE, NEED-REMOVE) by site: each package row has its
--   host's site, and the waiting rows have their own index in the order the report groups them;
-- * the hosts with a package or a piece of software, by name (`console hosts --software NAME`):
--   each row has its lower-case name and its host's FQDN and UUID, indexed in the console's
--   order, so a page reads only its own hosts.
-- Central writes these columns with the rows, and again when a host's site, name or UUID changes.

ALTER TABLE outpost.host_packages
    ADD COLUMN site text NOT NULL DEFAULT '',
    ADD COLUMN lname text COLLATE "C" GENERATED ALWAYS AS (lower(name)) STORED,
    ADD COLUMN fqdn text COLLATE "C" NOT NULL DEFAULT '',
    ADD COLUMN uuid text COLLATE "C" NOT NULL DEFAULT '';
UPDATE outpost.host_packages p SET site = h.site, fqdn = h.fqdn, uuid = h.uuid
FROM outpost.hosts h
WHERE h.fingerprint = p.fingerprint;
CREATE INDEX host_packages_pending ON outpost.host_packages (site, name, status) INCLUDE (fingerprint)
    WHERE status LIKE 'NEED-%';   -- the fingerprint: an index-only scan through the view's join
CREATE INDEX host_packages_host ON outpost.host_packages (lname, fqdn, uuid, fingerprint COLLATE "C");
DROP INDEX outpost.host_packages_lower_name;

ALTER TABLE outpost.host_software
    ADD COLUMN lname text COLLATE "C" GENERATED ALWAYS AS (lower(name)) STORED,
    ADD COLUMN fqdn text COLLATE "C" NOT NULL DEFAULT '',
    ADD COLUMN uuid text COLLATE "C" NOT NULL DEFAULT '';
UPDATE outpost.host_software s SET fqdn = h.fqdn, uuid = h.uuid
FROM outpost.hosts h
WHERE h.fingerprint = s.fingerprint;
CREATE INDEX host_software_host_order ON outpost.host_software (lname, fqdn, uuid, fingerprint COLLATE "C");

-- The same columns as before; the site now comes from the package row, so a query that reads
-- no host column (a count of waiting packages by site) never joins the hosts.
CREATE OR REPLACE VIEW reporting.host_packages AS
SELECT h.uuid,
       h.fqdn,
       p.site,
       p.name AS package,
       p.status,
       p.installed AS installed_version,
       p.target AS target_version,
       p.reason
FROM outpost.host_packages p
LEFT JOIN outpost.hosts h USING (fingerprint);
