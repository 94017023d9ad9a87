//! Reports (`outpost console report`): built-in queries over the `reporting` views, and queries
//! administrators save on central. They run on PostgreSQL (the replica given with
//! `--database-read` when there is one), in a read-only transaction with a time limit; saved
//! queries run as the reporting role, which reads the views and nothing else.

use deadpool_postgres::Pool;
use outpost_protocol::central::{CentralResponse, ReportInfo, Table};
use outpost_protocol::wire::ErrorCode;
use tokio_postgres::types::Type;

use super::store::postgres::{REPORTING_ROLE, client, describe};
use crate::clock::unix_now;

/// Most rows a report returns (the rest is left out, and the answer says so).
pub const MAX_ROWS: usize = 50_000;

/// How long a report may run.
const STATEMENT_TIMEOUT: &str = "60s";

/// A report that comes with Outpost.
#[derive(Debug)]
pub struct Builtin {
    /// Its name.
    pub name: &'static str,
    /// What it shows.
    pub description: &'static str,
    /// Parameters (`$1`, `$2`… in order) with their defaults.
    pub params: &'static [(&'static str, &'static str)],
    /// The query, over the `reporting` views only.
    pub sql: &'static str,
}

/// The built-in reports.
pub const BUILTIN: &[Builtin] = &[
    Builtin {
        name: "errors-by-site",
        description: "hosts in ERROR, by site, with the site's host count",
        params: &[],
        sql: "SELECT site, count(*) FILTER (WHERE status = 'ERROR') AS in_error, count(*) AS hosts
              FROM reporting.hosts GROUP BY site
              HAVING count(*) FILTER (WHERE status = 'ERROR') > 0
              ORDER BY in_error DESC, site",
    },
    Builtin {
        name: "software-versions",
        description: "installed software by name and version across the fleet (name: a LIKE pattern)",
        params: &[("name", "%")],
        sql: "SELECT name, version, count(*) AS hosts FROM reporting.software
              WHERE lower(name) LIKE lower($1)
              GROUP BY name, version ORDER BY name, version",
    },
    Builtin {
        name: "not-seen",
        description: "hosts that have not reported for the given number of days",
        params: &[("days", "7")],
        sql: "SELECT fqdn, site, status, last_seen FROM reporting.hosts
              WHERE last_seen < now() - make_interval(days => $1::integer)
              ORDER BY last_seen, fqdn",
    },
    Builtin {
        name: "pending-by-site",
        description: "packages waiting to be installed, upgraded or removed, by site",
        params: &[],
        sql: "SELECT site, package, status, count(*) AS hosts FROM reporting.host_packages
              WHERE status LIKE 'NEED-%'
              GROUP BY site, package, status ORDER BY site, package, status",
    },
];

fn error(code: ErrorCode, message: impl Into<String>) -> CentralResponse {
    CentralResponse::Error { code, message: message.into() }
}

fn no_database() -> CentralResponse {
    error(
        ErrorCode::BadRequest,
        "reports need central on PostgreSQL (outpost server --database …); this central keeps its data in redb",
    )
}

/// A report name: letters, digits, `-` and `_`, up to 64 characters.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The reports central can run.
pub async fn list(pool: Option<Pool>) -> CentralResponse {
    let Some(pool) = pool else { return no_database() };
    let mut out: Vec<ReportInfo> = BUILTIN
        .iter()
        .map(|b| ReportInfo {
            name: b.name.into(),
            description: b.description.into(),
            builtin: true,
            params: b.params.iter().map(|(n, d)| ((*n).into(), (*d).into())).collect(),
            author: String::new(),
        })
        .collect();
    let rows = async {
        let c = client(&pool, "the reporting database").await.map_err(|e| e.to_string())?;
        c.query("SELECT name, description, author FROM outpost.saved_queries ORDER BY name", &[])
            .await
            .map_err(|e| describe(&e))
    };
    match rows.await {
        Ok(rows) => out.extend(rows.iter().map(|r| ReportInfo {
            name: r.get(0),
            description: r.get(1),
            builtin: false,
            params: vec![],
            author: r.get(2),
        })),
        Err(e) => return error(ErrorCode::Internal, format!("listing saved reports: {e}")),
    }
    CentralResponse::Reports(out)
}

/// Runs report `name`: a built-in one with `params`, or a saved one.
pub async fn run(pool: Option<Pool>, name: String, params: Vec<(String, String)>) -> CentralResponse {
    let Some(pool) = pool else { return no_database() };
    match run_inner(&pool, &name, &params).await {
        Ok(t) => CentralResponse::Table(t),
        Err((code, m)) => error(code, m),
    }
}

async fn run_inner(pool: &Pool, name: &str, params: &[(String, String)]) -> Result<Table, (ErrorCode, String)> {
    let internal = |what: &str| {
        let what = what.to_string();
        move |e: tokio_postgres::Error| (ErrorCode::Internal, format!("report {name}: {what}: {}", describe(&e)))
    };
    let mut c = client(pool, "the reporting database").await.map_err(|e| (ErrorCode::Internal, e.to_string()))?;
    let (sql, values, saved) = match BUILTIN.iter().find(|b| b.name == name) {
        Some(b) => {
            for (k, _) in params {
                if !b.params.iter().any(|(n, _)| n == k) {
                    let takes: Vec<&str> = b.params.iter().map(|(n, _)| *n).collect();
                    let takes = if takes.is_empty() { "none".to_string() } else { takes.join(", ") };
                    return Err((
                        ErrorCode::BadRequest,
                        format!("report {name} has no parameter {k:?} (its parameters: {takes})"),
                    ));
                }
            }
            let values: Vec<String> = b
                .params
                .iter()
                .map(|(n, d)| {
                    params.iter().rev().find(|(k, _)| k == n).map_or_else(|| (*d).to_string(), |p| p.1.clone())
                })
                .collect();
            (b.sql.to_string(), values, false)
        }
        None => {
            let row = c
                .query_opt("SELECT sql FROM outpost.saved_queries WHERE name = $1", &[&name])
                .await
                .map_err(internal("reading it"))?;
            let Some(row) = row else {
                let names: Vec<&str> = BUILTIN.iter().map(|b| b.name).collect();
                return Err((
                    ErrorCode::NotFound,
                    format!(
                        "no report named {name:?} (built in: {}; `outpost console report list` shows the saved ones)",
                        names.join(", ")
                    ),
                ));
            };
            if !params.is_empty() {
                return Err((ErrorCode::BadRequest, format!("report {name} is a saved query: it takes no parameters")));
            }
            (row.get::<_, String>(0), vec![], true)
        }
    };
    let txn = c.transaction().await.map_err(internal("starting"))?;
    begin_read_only(&txn, saved).await.map_err(|e| (ErrorCode::Internal, format!("report {name}: {e}")))?;
    query_table(&txn, &sql, &values).await.map_err(|e| (ErrorCode::BadRequest, format!("report {name}: {e}")))
}

/// Read-only, with a time limit; as the reporting role for saved queries (which then read the
/// `reporting` views and nothing else).
async fn begin_read_only(txn: &deadpool_postgres::Transaction<'_>, as_reporting: bool) -> Result<(), String> {
    txn.batch_execute(&format!("SET TRANSACTION READ ONLY; SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'"))
        .await
        .map_err(|e| describe(&e))?;
    if as_reporting {
        txn.batch_execute(&format!("SET LOCAL ROLE {REPORTING_ROLE}")).await.map_err(|e| {
            format!(
                "saved reports run as the role {REPORTING_ROLE}, which central cannot take ({}); a database \
                 administrator runs: GRANT {REPORTING_ROLE} TO <central's user>",
                describe(&e)
            )
        })?;
    }
    Ok(())
}

/// The query's rows with every value as text (SQL's own text form), in column order.
async fn query_table(txn: &deadpool_postgres::Transaction<'_>, sql: &str, values: &[String]) -> Result<Table, String> {
    let sql = sql.trim().trim_end_matches(';').trim_end();
    let types = vec![Type::TEXT; values.len()];
    let inner = txn.prepare_typed(sql, &types).await.map_err(|e| describe(&e))?;
    let columns: Vec<String> = inner.columns().iter().map(|c| c.name().to_string()).collect();
    if columns.is_empty() {
        return Err("the query returns no columns (a report is one SELECT)".into());
    }
    let aliases: Vec<String> = (0..columns.len()).map(|i| format!("c{i}")).collect();
    let wrapped = format!(
        "SELECT {} FROM ({sql}) AS q({}) LIMIT {}",
        aliases.iter().map(|a| format!("{a}::text")).collect::<Vec<_>>().join(", "),
        aliases.join(", "),
        MAX_ROWS + 1
    );
    let stmt = txn.prepare_typed(&wrapped, &types).await.map_err(|e| describe(&e))?;
    let args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
        values.iter().map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
    let rows = txn.query(&stmt, &args).await.map_err(|e| describe(&e))?;
    let truncated = rows.len() > MAX_ROWS;
    let rows = rows
        .iter()
        .take(MAX_ROWS)
        .map(|r| (0..columns.len()).map(|i| r.get::<_, Option<String>>(i)).collect())
        .collect();
    Ok(Table { columns, rows, truncated })
}

/// Saves `sql` as report `name` after trying it (it must run, read-only, as the reporting role).
pub async fn save(
    pool: Option<Pool>,
    name: String,
    description: String,
    sql: String,
    author: String,
) -> CentralResponse {
    let Some(pool) = pool else { return no_database() };
    if !valid_name(&name) {
        return error(
            ErrorCode::BadRequest,
            format!("report name {name:?}: use letters, digits, - and _ (64 at most)"),
        );
    }
    if BUILTIN.iter().any(|b| b.name == name) {
        return error(ErrorCode::BadRequest, format!("{name} is a built-in report: choose another name"));
    }
    let saved = async {
        let mut c = client(&pool, "the database").await.map_err(|e| (ErrorCode::Internal, e.to_string()))?;
        {
            let txn = c.transaction().await.map_err(|e| (ErrorCode::Internal, describe(&e)))?;
            begin_read_only(&txn, true).await.map_err(|e| (ErrorCode::Internal, e))?;
            let tried = format!("SELECT * FROM ({}) AS q LIMIT 0", sql.trim().trim_end_matches(';'));
            txn.prepare(sql.trim().trim_end_matches(';')).await.map_err(|e| (ErrorCode::BadRequest, describe(&e)))?;
            txn.query(&tried, &[]).await.map_err(|e| (ErrorCode::BadRequest, describe(&e)))?;
            txn.rollback().await.map_err(|e| (ErrorCode::Internal, describe(&e)))?;
        }
        c.execute(
            "INSERT INTO outpost.saved_queries (name, description, sql, author, saved) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (name) DO UPDATE SET description = excluded.description, sql = excluded.sql,
             author = excluded.author, saved = excluded.saved",
            &[&name, &description, &sql, &author, &unix_now()],
        )
        .await
        .map_err(|e| (ErrorCode::Internal, describe(&e)))
    };
    match saved.await {
        Ok(_) => CentralResponse::Done(format!("report {name} saved")),
        Err((code, e)) => error(code, format!("report {name} not saved: {e}")),
    }
}

/// Deletes saved report `name`.
pub async fn delete(pool: Option<Pool>, name: String) -> CentralResponse {
    let Some(pool) = pool else { return no_database() };
    let done = async {
        let c = client(&pool, "the database").await.map_err(|e| e.to_string())?;
        c.execute("DELETE FROM outpost.saved_queries WHERE name = $1", &[&name]).await.map_err(|e| describe(&e))
    };
    match done.await {
        Ok(0) => error(ErrorCode::NotFound, format!("no saved report named {name:?}")),
        Ok(_) => CentralResponse::Done(format!("report {name} deleted")),
        Err(e) => error(ErrorCode::Internal, format!("deleting report {name}: {e}")),
    }
}
