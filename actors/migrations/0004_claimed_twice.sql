-- The UUIDs and names (in lower case, as `uuid:…` and `fqdn:…`) that more than one host
-- certificate has claimed at some time. A clash is rare, and checking every listed host for one
-- is two index probes a host (most of the time of a page of a thousand): the console looks a
-- host's claims up here first and probes only for those found. Central adds a key when it
-- stores a host whose UUID or name is new or changed and another host already has it (under an
-- advisory lock, so that two instances storing the two claimants at once see each other). A key
-- stays when the clash ends (the probes then find none): it only says where to look.
CREATE TABLE outpost.claimed_twice (
    key text COLLATE "C" PRIMARY KEY
);

INSERT INTO outpost.claimed_twice (key)
SELECT 'uuid:' || lower(uuid) FROM outpost.hosts WHERE uuid <> '' GROUP BY lower(uuid) HAVING count(*) > 1
UNION
SELECT 'fqdn:' || lower(fqdn) FROM outpost.hosts WHERE fqdn <> '' GROUP BY lower(fqdn) HAVING count(*) > 1;
