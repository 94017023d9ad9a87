-- Packages waiting (NEED-INSTALL, NEED-UPGRADE, NEED-REMOVE) by site without reading every host
-- or every package row: each package row also carries its host's site (central writes it with
-- the row, and again when a host moves to another site), and the waiting rows have their own
-- index, in the order the report groups them.

ALTER TABLE outpost.host_packages ADD COLUMN site text NOT NULL DEFAULT '';
UPDATE outpost.host_packages p SET site = h.site
FROM outpost.hosts h
WHERE h.fingerprint = p.fingerprint AND h.site <> '';
CREATE INDEX host_packages_pending ON outpost.host_packages (site, name, status) WHERE status LIKE 'NEED-%';

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
