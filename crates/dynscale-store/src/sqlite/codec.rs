//! How domain values are written to and read back from SQLite columns: timestamps,
//! uuids, versions, JSON and kill scopes, and the reading of rows that turns any
//! value that does not decode into [`StoreError::Corrupt`].

use dynscale_core::controls::{EscalationStatus, KillScope};
use dynscale_core::ids::{AgentId, PackId};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};
use uuid::Uuid;

use crate::state::StoreError;

/// Writes a timestamp as RFC 3339 in UTC with exactly nine fractional digits.
///
/// The fixed width keeps nanoseconds (so values round-trip exactly) and makes the
/// text sort in time order, which the escalation listings order by. Years outside
/// 0 to 9999 have no such form and are refused rather than stored out of order.
pub(crate) fn encode_time(what: &'static str, t: OffsetDateTime) -> Result<String, StoreError> {
    let unstorable = |reason| StoreError::Unstorable {
        what,
        value: t.to_string(),
        reason,
    };
    let utc = t
        .checked_to_offset(UtcOffset::UTC)
        .ok_or_else(|| unstorable("it has no UTC equivalent"))?;
    if !(0..=9999).contains(&utc.year()) {
        return Err(unstorable("the year is outside 0 to 9999"));
    }
    Ok(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        utc.year(),
        u8::from(utc.month()),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second(),
        utc.nanosecond()
    ))
}

/// Writes a uuid in the one form the store compares and sorts by.
pub(crate) fn encode_uuid(id: Uuid) -> String {
    id.hyphenated().to_string()
}

/// Writes a kill scope as its `(scope, id)` key; the global switch has the empty id.
pub(crate) fn encode_scope(scope: &KillScope) -> (&'static str, &str) {
    match scope {
        KillScope::Global => ("global", ""),
        KillScope::Pack(pack) => ("pack", pack.as_str()),
        KillScope::Agent(agent) => ("agent", agent.as_str()),
    }
}

/// Writes a JSON value as text. Serializing a `serde_json::Value` cannot fail (its
/// map keys are strings), but the error is passed on rather than assumed away.
pub(crate) fn encode_json(
    what: &'static str,
    value: &impl serde::Serialize,
) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|_| StoreError::Unstorable {
        what,
        value: String::from("(unserializable)"),
        reason: "it does not serialize as JSON",
    })
}

/// Reads the columns of one row, naming the table and the row's key in any error.
pub(crate) struct RowReader<'r> {
    row: &'r SqliteRow,
    table: &'static str,
    /// The columns that identify the row, read only to describe it in an error.
    key_columns: &'static [&'static str],
}

impl<'r> RowReader<'r> {
    pub(crate) fn new(
        row: &'r SqliteRow,
        table: &'static str,
        key_columns: &'static [&'static str],
    ) -> Self {
        Self {
            row,
            table,
            key_columns,
        }
    }

    /// The row's key as text, best effort: it only labels an error.
    fn key(&self) -> String {
        let parts: Vec<String> = self
            .key_columns
            .iter()
            .map(|column| {
                self.row
                    .try_get::<String, _>(*column)
                    .or_else(|_| self.row.try_get::<i64, _>(*column).map(|n| n.to_string()))
                    .unwrap_or_else(|_| String::from("?"))
            })
            .collect();
        parts.join("/")
    }

    fn corrupt(&self, column: &'static str, value: String, reason: impl ToString) -> StoreError {
        StoreError::Corrupt {
            table: self.table,
            row: self.key(),
            column,
            value,
            reason: reason.to_string(),
        }
    }

    /// A value SQLite holds in a type other than the schema's (its columns are
    /// loosely typed) is corruption too, not a backend failure.
    fn get<T>(&self, column: &'static str) -> Result<T, StoreError>
    where
        T: for<'a> sqlx::Decode<'a, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
    {
        self.row
            .try_get::<T, _>(column)
            .map_err(|e| self.corrupt(column, String::from("(undecodable)"), e))
    }

    pub(crate) fn text(&self, column: &'static str) -> Result<String, StoreError> {
        self.get(column)
    }

    pub(crate) fn optional_text(&self, column: &'static str) -> Result<Option<String>, StoreError> {
        self.get(column)
    }

    /// An event id or count: SQLite integers are signed, ids are not.
    pub(crate) fn id(&self, column: &'static str) -> Result<u64, StoreError> {
        let n: i64 = self.get(column)?;
        u64::try_from(n).map_err(|e| self.corrupt(column, n.to_string(), e))
    }

    pub(crate) fn time(&self, column: &'static str) -> Result<OffsetDateTime, StoreError> {
        let text = self.text(column)?;
        self.parse_time(column, text)
    }

    pub(crate) fn optional_time(
        &self,
        column: &'static str,
    ) -> Result<Option<OffsetDateTime>, StoreError> {
        match self.optional_text(column)? {
            None => Ok(None),
            Some(text) => self.parse_time(column, text).map(Some),
        }
    }

    fn parse_time(&self, column: &'static str, text: String) -> Result<OffsetDateTime, StoreError> {
        match OffsetDateTime::parse(&text, &Rfc3339) {
            Ok(t) => match t.checked_to_offset(UtcOffset::UTC) {
                Some(utc) => Ok(utc),
                None => Err(self.corrupt(column, text, "no UTC equivalent")),
            },
            Err(e) => Err(self.corrupt(column, text, e)),
        }
    }

    pub(crate) fn uuid(&self, column: &'static str) -> Result<Uuid, StoreError> {
        let text = self.text(column)?;
        Uuid::parse_str(&text).map_err(|e| self.corrupt(column, text.clone(), e))
    }

    pub(crate) fn version(&self, column: &'static str) -> Result<semver::Version, StoreError> {
        let text = self.text(column)?;
        semver::Version::parse(&text).map_err(|e| self.corrupt(column, text.clone(), e))
    }

    pub(crate) fn json(&self, column: &'static str) -> Result<serde_json::Value, StoreError> {
        let text = self.text(column)?;
        serde_json::from_str(&text).map_err(|e| self.corrupt(column, text.clone(), e))
    }

    /// A typed value from a JSON column already read as `value`.
    pub(crate) fn decode_json<T: serde::de::DeserializeOwned>(
        &self,
        column: &'static str,
        value: serde_json::Value,
    ) -> Result<T, StoreError> {
        let text = value.to_string();
        serde_json::from_value(value).map_err(|e| self.corrupt(column, text, e))
    }

    pub(crate) fn json_object(
        &self,
        column: &'static str,
    ) -> Result<serde_json::Map<String, serde_json::Value>, StoreError> {
        let text = self.text(column)?;
        serde_json::from_str(&text).map_err(|e| self.corrupt(column, text.clone(), e))
    }

    pub(crate) fn status(&self, column: &'static str) -> Result<EscalationStatus, StoreError> {
        let text = self.text(column)?;
        EscalationStatus::parse(&text)
            .ok_or_else(|| self.corrupt(column, text.clone(), "not an escalation status"))
    }

    /// Reads a kill scope from its `scope` and `id` columns.
    pub(crate) fn scope(&self) -> Result<KillScope, StoreError> {
        let scope = self.text("scope")?;
        let id = self.text("id")?;
        match scope.as_str() {
            "global" if id.is_empty() => Ok(KillScope::Global),
            "global" => Err(self.corrupt("id", id, "a global kill switch has no id")),
            "pack" => Ok(KillScope::Pack(PackId::new(id))),
            "agent" => Ok(KillScope::Agent(AgentId::new(id))),
            _ => Err(self.corrupt("scope", scope, "not a kill switch scope")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_text_is_fixed_width_utc_and_round_trips() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_735_689_600_000_000_007)
            .expect("in range")
            .to_offset(UtcOffset::from_hms(2, 0, 0).expect("valid offset"));
        let text = encode_time("t", t).expect("storable");
        assert_eq!(text, "2025-01-01T00:00:00.000000007Z");
        let back = OffsetDateTime::parse(&text, &Rfc3339).expect("parses");
        assert_eq!(back, t);
        assert_eq!(back.offset(), UtcOffset::UTC);
    }

    #[test]
    fn time_text_sorts_in_time_order() {
        let earlier = OffsetDateTime::from_unix_timestamp(1_000).expect("in range");
        let later = earlier + time::Duration::nanoseconds(500_000_000);
        assert!(
            encode_time("t", earlier).expect("storable")
                < encode_time("t", later).expect("storable")
        );
    }

    #[test]
    fn negative_years_are_refused() {
        let t = time::Date::from_calendar_date(-1, time::Month::January, 1)
            .expect("valid date")
            .midnight()
            .assume_utc();
        assert!(matches!(
            encode_time("t", t),
            Err(StoreError::Unstorable { what: "t", .. })
        ));
    }
}
