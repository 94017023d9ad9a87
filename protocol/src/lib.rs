//! Outpost's pure core.
//!
//! Everything here is a pure function or a state machine: no files, no sockets, no clocks, no
//! async runtime. Time comes in as an argument (`now`), bytes come in as slices or as generic
//! `Read + Seek` values that the caller opened. The `nodes` binary and the `actors` crate do the
//! I/O and call into this crate.
//!
//! * [`control`]: WAPT-style control files (parse, write, errors with line numbers).
//! * [`version`] and [`request`]: version order and package requests (`name(>=1.2)`).
//! * [`entry`]: the typed view of a control used for resolution, and the host filters.
//! * [`resolver`]: snapshot entries + host → plan and statuses.
//! * [`pki`]: the organisation CA, roles, certificates, encrypted keys, chain checks.
//! * [`package`]: Outpost packages: the signed manifest, building and verifying.
//! * [`wapt`]: reading WAPT's signed controls, package archives and indexes.
//! * [`chunking`]: content-defined chunking and file recipes.
//! * [`snapshot`]: signed repository snapshots and heads.
//! * [`lineage`]: CA-signed lineage documents that move edges and agents to a new line of
//!   snapshots (after a restore).
//! * [`wire`]: the repository protocol's messages and limits.
//! * [`check`]: the head check in one UDP datagram each way, for agents holding a ticket.
//! * [`schedule`]: sync windows and the bandwidth token bucket.
//! * [`hex`]: the one text form of hashes and fingerprints.
//! * [`central`]: enrollment, signed inventory reports, actions and console queries.

pub mod central;
pub mod check;
pub mod chunking;
pub mod control;
pub mod delta;
pub mod der;
pub mod entry;
pub mod hex;
pub mod lineage;
pub mod package;
pub mod pem;
pub mod pki;
pub mod raw;
pub mod request;
pub mod resolver;
pub mod schedule;
pub mod selection;
pub mod signing;
pub mod snapshot;
pub mod text;
pub mod time_fmt;
pub mod verified;
pub mod version;
pub mod wapt;
pub mod wire;
