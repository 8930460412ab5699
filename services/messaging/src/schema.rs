//! Where the messaging tables live: the owning service's schema.
//!
//! Each service owns its data (ARCHITECTURE: one schema per service, its own migrations), and the
//! outbox and inbox are part of that data: an event is written in the same transaction as the state
//! change, so it must sit in the same database as that state. [`migrate`] therefore creates
//! `<schema>.outbox`, `<schema>.inbox` and a `<schema>._sqlx_migrations` of the crate's own, so a
//! service's own migrations and these never collide, and two services (or two tests) sharing one
//! database never see each other's rows.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use sqlx::migrate::Migrator;
use sqlx::{AssertSqlSafe, PgPool};

/// The crate's migrations (`migrations/NNNN_name.sql`), embedded at build time.
static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// A PostgreSQL schema name that is safe to splice into SQL: lower-case ASCII letters, digits and
/// `_`, starting with a letter or `_`, at most 63 bytes (PostgreSQL's identifier limit). It is always
/// written quoted, so reserved words such as `order` work too.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Schema(Arc<str>);

/// A schema name that was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// The name is empty, too long, or has a character outside `[a-z0-9_]`, or starts with a digit.
    #[error("{name:?} is not a schema name: {reason}")]
    InvalidName {
        /// The refused name (cut to 80 characters).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl Schema {
    /// Checks `name` (see the type's docs).
    pub fn new(name: &str) -> Result<Self, SchemaError> {
        let refuse = |reason| {
            Err(SchemaError::InvalidName {
                name: name.chars().take(80).collect(),
                reason,
            })
        };
        let Some(first) = name.chars().next() else {
            return refuse("it is empty");
        };
        if name.len() > 63 {
            return refuse("it is longer than 63 bytes");
        }
        if !(first.is_ascii_lowercase() || first == '_') {
            return refuse("it must start with a lower-case letter or _");
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return refuse("only lower-case ASCII letters, digits and _ are allowed");
        }
        Ok(Self(name.into()))
    }

    /// The bare name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name quoted for SQL (`"order"`).
    pub(crate) fn quoted(&self) -> String {
        // Safe to splice: `new` admits no quote or other special character.
        format!("\"{}\"", self.0)
    }

    /// A table of this schema, quoted for SQL (`"order".outbox`).
    pub(crate) fn table(&self, table: &str) -> String {
        format!("{}.{table}", self.quoted())
    }
}

impl fmt::Display for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Schema {
    type Err = SchemaError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// Why the messaging tables could not be created.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// No connection, or setting the search path failed.
    #[error("preparing the connection for migrations: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed, or an applied one was edited.
    #[error("running the messaging migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Creates `schema` if missing and applies the crate's migrations inside it: `outbox`, `inbox` and
/// their bookkeeping table `_sqlx_migrations`. Safe to call from every replica at start: sqlx takes
/// an advisory lock, and applied migrations are skipped.
pub async fn migrate(pool: &PgPool, schema: &Schema) -> Result<(), MigrateError> {
    let mut migrator = Migrator::with_migrations(MIGRATIONS.iter().cloned().collect());
    // Created under sqlx's advisory lock, so two replicas starting at once do not race on it.
    migrator.create_schema(schema.quoted());
    migrator.dangerous_set_table_name(schema.table("_sqlx_migrations"));
    // The migration files name their tables without a schema; the search path puts them in ours. A
    // detached connection carries that setting and is closed afterwards, so it never returns to the
    // pool with a foreign search path.
    let mut conn = pool.acquire().await?.detach();
    sqlx::query(AssertSqlSafe(format!("set search_path to {}", schema.quoted())))
        .execute(&mut conn)
        .await?;
    let result = migrator.run(&mut conn).await;
    // A failed close only leaks a connection the server will drop; the migration result matters.
    let _ = sqlx::Connection::close(conn).await;
    Ok(result?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lower_case_names_are_accepted_and_quoted() {
        let schema = Schema::new("order").unwrap();
        assert_eq!(schema.as_str(), "order");
        assert_eq!(schema.table("outbox"), "\"order\".outbox");
        assert!(Schema::new("_kitchen_2").is_ok());
        assert!(Schema::new(&"a".repeat(63)).is_ok());
    }

    #[test]
    fn names_that_could_break_out_of_sql_are_refused() {
        for bad in [
            "",
            "Order",
            "2kitchen",
            "kitchen-1",
            "a\"; drop table x; --",
            "ä",
            &"a".repeat(64),
        ] {
            assert!(Schema::new(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
