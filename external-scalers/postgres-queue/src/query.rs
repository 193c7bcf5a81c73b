//! What to count, read from the trigger metadata, and the SQL that counts it.
//!
//! Identifiers from the metadata (schema, table, status column) are always quoted, so they are
//! names and never SQL; the pending value is always a bound parameter. The only SQL that comes
//! from the metadata verbatim is the `where` clause, which the scaler refuses unless it was
//! started with `--allow-where-clause` (see the README for what that trusts).

use keda_external_scaler::{Error, Result, ScalerRequest};

/// The longest identifier PostgreSQL keeps (`NAMEDATALEN - 1` bytes); longer ones are truncated
/// by the server, which would silently name something else.
const MAX_IDENTIFIER_BYTES: usize = 63;

/// Quotes `name` as a PostgreSQL identifier: `"` + name with `"` doubled + `"`.
pub fn quote_identifier(name: &str) -> Result<String> {
    if name.is_empty() {
        return Err(Error::invalid_metadata("an identifier cannot be empty"));
    }
    if name.contains('\0') {
        return Err(Error::invalid_metadata(format!(
            "identifier {name:?} contains a NUL character"
        )));
    }
    if name.len() > MAX_IDENTIFIER_BYTES {
        return Err(Error::invalid_metadata(format!(
            "identifier {name:?} is longer than {MAX_IDENTIFIER_BYTES} bytes"
        )));
    }
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

/// Which rows of the table are pending.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Filter {
    /// Every row.
    All,
    /// Rows whose `column` equals `value` (compared after casting the text to the column's type).
    Status {
        /// The status column, quoted.
        column: String,
        /// The value meaning "pending".
        value: String,
    },
    /// Rows matching a boolean SQL expression (only with `--allow-where-clause`).
    Where(String),
}

/// The count asked for by one trigger.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QuerySpec {
    /// `schema.table` or `table` as written in the metadata, for logs and metric names.
    display: String,
    /// The quoted, possibly schema-qualified table.
    relation: String,
    /// Which rows are pending.
    filter: Filter,
}

impl QuerySpec {
    /// Reads the table and filter from the metadata (`schema`, `table`, `statusColumn` +
    /// `pendingValue`, `where`).
    pub fn from_request(request: &ScalerRequest, allow_where: bool) -> Result<Self> {
        let table = request.required("table")?;
        let (relation, display) = match request.get("schema") {
            None | Some("") => (quote_identifier(table)?, table.to_owned()),
            Some(schema) => (
                format!("{}.{}", quote_identifier(schema)?, quote_identifier(table)?),
                format!("{schema}.{table}"),
            ),
        };
        let status_column = request.get("statusColumn").filter(|v| !v.is_empty());
        let pending_value = request.get("pendingValue");
        let where_clause = request.get("where").filter(|v| !v.trim().is_empty());
        let filter = match (status_column, pending_value, where_clause) {
            (Some(_), _, Some(_)) => {
                return Err(Error::invalid_metadata(
                    "give either `statusColumn`/`pendingValue` or `where`, not both",
                ));
            }
            (Some(column), Some(value), None) => Filter::Status {
                column: quote_identifier(column)?,
                value: value.to_owned(),
            },
            (Some(_), None, None) => {
                return Err(Error::invalid_metadata(
                    "`statusColumn` needs `pendingValue` (the value of pending rows)",
                ));
            }
            (None, Some(_), _) => {
                return Err(Error::invalid_metadata(
                    "`pendingValue` needs `statusColumn`",
                ));
            }
            (None, None, Some(clause)) => {
                if !allow_where {
                    return Err(Error::invalid_metadata(
                        "`where` clauses are disabled on this scaler (it was not started with \
                         --allow-where-clause); use `statusColumn` and `pendingValue`",
                    ));
                }
                if clause.contains(';') || clause.contains('\0') {
                    return Err(Error::invalid_metadata(
                        "`where` must be a single expression (no `;`)",
                    ));
                }
                Filter::Where(clause.to_owned())
            }
            (None, None, None) => Filter::All,
        };
        Ok(Self {
            display,
            relation,
            filter,
        })
    }

    /// The quoted, possibly schema-qualified table.
    pub fn relation(&self) -> &str {
        &self.relation
    }

    /// `schema.table` or `table`, as written in the metadata.
    pub fn display_name(&self) -> &str {
        &self.display
    }

    /// Which rows count.
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// For [`Filter::Status`]: a statement whose only parameter PostgreSQL types as the status
    /// column's type (read from the prepared statement, then used by [`count_sql`](Self::count_sql)).
    pub fn probe_sql(&self) -> Option<String> {
        match &self.filter {
            Filter::Status { column, .. } => Some(format!(
                "SELECT 1 FROM {} WHERE {column} = $1",
                self.relation
            )),
            _ => None,
        }
    }

    /// The counting statement. For [`Filter::Status`], `status_type` is the column's type as
    /// `(schema, name)`; `$1` (text) is cast to it, so an index on the column still applies.
    pub fn count_sql(&self, status_type: Option<(&str, &str)>) -> Result<String> {
        let relation = &self.relation;
        Ok(match &self.filter {
            Filter::All => format!("SELECT count(*) FROM {relation}"),
            Filter::Status { column, .. } => match status_type {
                Some((schema, name)) => format!(
                    "SELECT count(*) FROM {relation} WHERE {column} = CAST($1::text AS {}.{})",
                    quote_identifier(schema)?,
                    quote_identifier(name)?
                ),
                None => format!("SELECT count(*) FROM {relation} WHERE {column} = $1::text"),
            },
            // The clause stays inside its own parentheses on lines of its own, so a trailing
            // `--` comment cannot swallow the closing parenthesis.
            Filter::Where(clause) => {
                format!("SELECT count(*) FROM {relation} WHERE (\n{clause}\n)")
            }
        })
    }

    /// The text parameter of the count, if any.
    pub fn parameter(&self) -> Option<&str> {
        match &self.filter {
            Filter::Status { value, .. } => Some(value),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(pairs: &[(&str, &str)]) -> ScalerRequest {
        ScalerRequest::from_pairs("w", "ns", pairs)
    }

    #[test]
    fn identifiers_are_quoted_with_quotes_doubled() {
        assert_eq!(quote_identifier("jobs").unwrap(), "\"jobs\"");
        assert_eq!(
            quote_identifier("a\"; DROP TABLE x; --").unwrap(),
            "\"a\"\"; DROP TABLE x; --\""
        );
        assert!(quote_identifier("").is_err());
        assert!(quote_identifier("a\0b").is_err());
        assert!(quote_identifier(&"x".repeat(64)).is_err());
        assert!(quote_identifier(&"x".repeat(63)).is_ok());
    }

    #[test]
    fn status_filter_binds_the_value_and_quotes_every_name() {
        let spec = QuerySpec::from_request(
            &request(&[
                ("schema", "Queue"),
                ("table", "jobs\"x"),
                ("statusColumn", "state"),
                ("pendingValue", "'; DELETE FROM jobs; --"),
            ]),
            false,
        )
        .unwrap();
        assert_eq!(spec.relation(), "\"Queue\".\"jobs\"\"x\"");
        assert_eq!(
            spec.count_sql(Some(("public", "job state"))).unwrap(),
            "SELECT count(*) FROM \"Queue\".\"jobs\"\"x\" WHERE \"state\" = \
             CAST($1::text AS \"public\".\"job state\")"
        );
        assert_eq!(spec.parameter(), Some("'; DELETE FROM jobs; --"));
        assert_eq!(
            spec.probe_sql().unwrap(),
            "SELECT 1 FROM \"Queue\".\"jobs\"\"x\" WHERE \"state\" = $1"
        );
    }

    #[test]
    fn without_a_filter_every_row_counts() {
        let spec = QuerySpec::from_request(&request(&[("table", "jobs")]), false).unwrap();
        assert_eq!(spec.filter(), &Filter::All);
        assert_eq!(
            spec.count_sql(None).unwrap(),
            "SELECT count(*) FROM \"jobs\""
        );
        assert_eq!(spec.parameter(), None);
        assert_eq!(spec.display_name(), "jobs");
    }

    #[test]
    fn where_clauses_need_the_flag_and_a_single_expression() {
        let r = request(&[("table", "jobs"), ("where", "run_at <= now()")]);
        let refused = QuerySpec::from_request(&r, false).unwrap_err();
        assert!(
            refused.message().contains("--allow-where-clause"),
            "{refused}"
        );
        let spec = QuerySpec::from_request(&r, true).unwrap();
        assert_eq!(
            spec.count_sql(None).unwrap(),
            "SELECT count(*) FROM \"jobs\" WHERE (\nrun_at <= now()\n)"
        );
        let two = request(&[("table", "jobs"), ("where", "true; DROP TABLE jobs")]);
        assert!(QuerySpec::from_request(&two, true).is_err());
    }

    #[test]
    fn inconsistent_metadata_is_invalid() {
        for pairs in [
            &[("statusColumn", "s"), ("pendingValue", "p")][..],
            &[("table", "jobs"), ("statusColumn", "s")][..],
            &[("table", "jobs"), ("pendingValue", "p")][..],
            &[
                ("table", "jobs"),
                ("statusColumn", "s"),
                ("pendingValue", "p"),
                ("where", "true"),
            ][..],
            &[("table", "")][..],
        ] {
            let error = QuerySpec::from_request(&request(pairs), true).unwrap_err();
            assert_eq!(
                error.kind(),
                keda_external_scaler::ErrorKind::InvalidMetadata,
                "{pairs:?}"
            );
        }
    }
}
