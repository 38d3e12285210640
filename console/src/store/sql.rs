//! The one SQL the subject modules write, run on either backend.
//!
//! Every statement of the console is written once, in the SQL both SQLite and PostgreSQL
//! speak, with SQLite's numbered placeholders `?1`, `?2`, … A statement reaches PostgreSQL
//! with them renumbered `$1`, `$2`, … (outside quotes); nothing else is rewritten, so what a
//! module writes is what runs. The rules that keep a statement portable:
//!
//! ```text
//! placeholders   ?N only (never ?, :name, $N)
//! integers       BIGINT in both schemas; casts as CAST(x AS BIGINT); sums cast to BIGINT
//!                (PostgreSQL's SUM of a BIGINT is NUMERIC, which no column type here reads)
//! truth          EXISTS (…) and comparisons read as bool on both (SQLite answers 0/1)
//! new ids        INSERT … RETURNING id (never last_insert_rowid)
//! upserts        INSERT … ON CONFLICT … DO NOTHING / DO UPDATE SET x = excluded.x
//! list cursors   clips and devices page by `rowid`: SQLite's own, a generated column in
//!                PostgreSQL's schema
//! no dialect     no json_extract, MIN(a, b)/MAX(a, b) of two values, COLLATE, GREATEST,
//!                LIMIT without ORDER BY; JSON is read in Rust, two-value minima as CASE
//! NULL order     never relied on (SQLite sorts NULL first, PostgreSQL last)
//! optional args  `CAST(?1 AS BIGINT) IS NULL OR id > ?1`: PostgreSQL cannot tell the type
//!                of a parameter that only `IS NULL` tests
//! ```
//!
//! Arguments are [`Value`]s (`args![a, b]` makes them from Rust values); a PostgreSQL
//! parameter takes the type the server inferred for it (a BIGINT argument for an INTEGER
//! parameter is narrowed, checked). Results are read with [`Row::get`] into the Rust type the
//! caller names ([`Column`]): integers of any width, bool (from 0/1 too), text, bytes and
//! their `Option`s; a value of another type is a [`ConsoleError::Corrupt`] naming the column.

use crate::error::ConsoleError;

/// One argument of a statement.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Null,
    Int(i64),
    Text(&'a str),
    Blob(&'a [u8]),
}

/// What can be an argument.
pub trait IntoValue {
    fn value(&self) -> Value<'_>;
}

impl IntoValue for i64 {
    fn value(&self) -> Value<'_> {
        Value::Int(*self)
    }
}
impl IntoValue for i32 {
    fn value(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}
impl IntoValue for u32 {
    fn value(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}
/// Sizes and counts beyond `i64::MAX` do not exist here; they would be stored as the largest.
impl IntoValue for u64 {
    fn value(&self) -> Value<'_> {
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}
impl IntoValue for usize {
    fn value(&self) -> Value<'_> {
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}
impl IntoValue for bool {
    fn value(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}
impl IntoValue for str {
    fn value(&self) -> Value<'_> {
        Value::Text(self)
    }
}
impl IntoValue for String {
    fn value(&self) -> Value<'_> {
        Value::Text(self)
    }
}
impl IntoValue for [u8] {
    fn value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}
impl IntoValue for Vec<u8> {
    fn value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}
impl<T: IntoValue> IntoValue for Option<T> {
    fn value(&self) -> Value<'_> {
        self.as_ref().map_or(Value::Null, IntoValue::value)
    }
}
impl<T: IntoValue + ?Sized> IntoValue for &T {
    fn value(&self) -> Value<'_> {
        (**self).value()
    }
}

/// The arguments of a statement, from Rust values: `args![id, name, None::<i64>]`.
macro_rules! args {
    () => { &[] as &[$crate::store::sql::Value<'_>] };
    ($($v:expr),+ $(,)?) => { &[$($crate::store::sql::IntoValue::value(&$v)),+] as &[$crate::store::sql::Value<'_>] };
}
pub(crate) use args;

/// One value of a result row, whatever the backend.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// What a result column can be read as.
pub trait Column: Sized {
    /// `None` when the cell is of a type this Rust type is not read from.
    fn from_cell(cell: Cell) -> Option<Self>;
}

impl Column for i64 {
    fn from_cell(cell: Cell) -> Option<Self> {
        match cell {
            Cell::Int(v) => Some(v),
            _ => None,
        }
    }
}
impl Column for u32 {
    fn from_cell(cell: Cell) -> Option<Self> {
        i64::from_cell(cell).and_then(|v| u32::try_from(v).ok())
    }
}
impl Column for u64 {
    fn from_cell(cell: Cell) -> Option<Self> {
        i64::from_cell(cell).and_then(|v| u64::try_from(v).ok())
    }
}
impl Column for bool {
    fn from_cell(cell: Cell) -> Option<Self> {
        i64::from_cell(cell).map(|v| v != 0)
    }
}
impl Column for String {
    fn from_cell(cell: Cell) -> Option<Self> {
        match cell {
            Cell::Text(v) => Some(v),
            _ => None,
        }
    }
}
impl Column for Vec<u8> {
    fn from_cell(cell: Cell) -> Option<Self> {
        match cell {
            Cell::Blob(v) => Some(v),
            // SQLite keeps what was written; bytes written as text read back as bytes.
            Cell::Text(v) => Some(v.into_bytes()),
            _ => None,
        }
    }
}
impl Column for f64 {
    fn from_cell(cell: Cell) -> Option<Self> {
        match cell {
            Cell::Real(v) => Some(v),
            Cell::Int(v) => Some(v as f64),
            _ => None,
        }
    }
}
impl<T: Column> Column for Option<T> {
    fn from_cell(cell: Cell) -> Option<Self> {
        match cell {
            Cell::Null => Some(None),
            other => T::from_cell(other).map(Some),
        }
    }
}

/// One result row.
pub struct Row<'r> {
    inner: RowInner<'r>,
}

enum RowInner<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    Postgres(&'r postgres::Row),
}

impl Row<'_> {
    pub(super) fn sqlite<'r>(row: &'r rusqlite::Row<'r>) -> Row<'r> {
        Row { inner: RowInner::Sqlite(row) }
    }

    pub(super) fn postgres(row: &postgres::Row) -> Row<'_> {
        Row { inner: RowInner::Postgres(row) }
    }

    /// Column `i` as a `T`; a cell of another type is corrupt (a query and its reader
    /// disagree, or a damaged database).
    pub fn get<T: Column>(&self, i: usize) -> Result<T, ConsoleError> {
        let cell = self.cell(i)?;
        let shown = format!("{cell:?}");
        T::from_cell(cell).ok_or_else(|| {
            ConsoleError::corrupt(
                format!("column {i}"),
                format!("{} cannot be read as {}", shown, std::any::type_name::<T>()),
            )
        })
    }

    fn cell(&self, i: usize) -> Result<Cell, ConsoleError> {
        match &self.inner {
            RowInner::Sqlite(row) => {
                use rusqlite::types::ValueRef;
                Ok(match row.get_ref(i)? {
                    ValueRef::Null => Cell::Null,
                    ValueRef::Integer(v) => Cell::Int(v),
                    ValueRef::Real(v) => Cell::Real(v),
                    ValueRef::Text(v) => Cell::Text(String::from_utf8_lossy(v).into_owned()),
                    ValueRef::Blob(v) => Cell::Blob(v.to_vec()),
                })
            }
            RowInner::Postgres(row) => pg_cell(row, i),
        }
    }
}

fn pg_cell(row: &postgres::Row, i: usize) -> Result<Cell, ConsoleError> {
    use postgres::types::Type;
    let Some(column) = row.columns().get(i) else {
        return Err(ConsoleError::corrupt(format!("column {i}"), "the row has no such column"));
    };
    let ty = column.type_().clone();
    let cell = if ty == Type::INT8 {
        row.try_get::<_, Option<i64>>(i)?.map(Cell::Int)
    } else if ty == Type::INT4 {
        row.try_get::<_, Option<i32>>(i)?.map(|v| Cell::Int(i64::from(v)))
    } else if ty == Type::INT2 {
        row.try_get::<_, Option<i16>>(i)?.map(|v| Cell::Int(i64::from(v)))
    } else if ty == Type::BOOL {
        row.try_get::<_, Option<bool>>(i)?.map(|v| Cell::Int(i64::from(v)))
    } else if ty == Type::FLOAT8 {
        row.try_get::<_, Option<f64>>(i)?.map(Cell::Real)
    } else if ty == Type::FLOAT4 {
        row.try_get::<_, Option<f32>>(i)?.map(|v| Cell::Real(f64::from(v)))
    } else if ty == Type::BYTEA {
        row.try_get::<_, Option<Vec<u8>>>(i)?.map(Cell::Blob)
    } else if [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME].contains(&ty) {
        row.try_get::<_, Option<String>>(i)?.map(Cell::Text)
    } else {
        return Err(ConsoleError::corrupt(
            format!("column {i} ({})", column.name()),
            format!("PostgreSQL type {ty} is not one the console reads"),
        ));
    };
    Ok(cell.unwrap_or(Cell::Null))
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match *self {
            Value::Null => ValueRef::Null,
            Value::Int(v) => ValueRef::Integer(v),
            Value::Text(v) => ValueRef::Text(v.as_bytes()),
            Value::Blob(v) => ValueRef::Blob(v),
        }))
    }
}

impl postgres::types::ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::{IsNull, Type};
        match *self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) if *ty == Type::INT8 => v.to_sql(ty, out),
            Value::Int(v) if *ty == Type::INT4 => i32::try_from(v)?.to_sql(ty, out),
            Value::Int(v) if *ty == Type::INT2 => i16::try_from(v)?.to_sql(ty, out),
            Value::Int(v) if *ty == Type::BOOL => (v != 0).to_sql(ty, out),
            Value::Int(v) if *ty == Type::FLOAT8 => (v as f64).to_sql(ty, out),
            Value::Int(v) if is_text(ty) => v.to_string().as_str().to_sql(ty, out),
            Value::Text(v) if is_text(ty) => v.to_sql(ty, out),
            Value::Blob(v) if *ty == Type::BYTEA => v.to_sql(ty, out),
            Value::Text(v) if *ty == Type::BYTEA => v.as_bytes().to_sql(ty, out),
            other => Err(format!("a {other:?} argument for a {ty} parameter").into()),
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        // Every type is accepted here; to_sql refuses the pairs it cannot convert, naming them.
        true
    }

    postgres::types::to_sql_checked!();
}

fn is_text(ty: &postgres::types::Type) -> bool {
    use postgres::types::Type;
    [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME, Type::UNKNOWN].contains(ty)
}

/// `sql` with `?N` placeholders renumbered `$N` for PostgreSQL; quoted text and identifiers
/// are copied as they are.
pub fn to_postgres(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                out.push(c);
                if c == q {
                    quote = None;
                }
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) => out.push('$'),
            None => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_renumbered_outside_quotes_only() {
        assert_eq!(
            to_postgres("SELECT '?1', \"a?2\" FROM t WHERE a = ?1 AND b > ?12"),
            "SELECT '?1', \"a?2\" FROM t WHERE a = $1 AND b > $12"
        );
        assert_eq!(to_postgres("SELECT 'it''s ?3' WHERE x = ?3"), "SELECT 'it''s ?3' WHERE x = $3");
    }

    #[test]
    fn columns_read_what_each_backend_answers() {
        assert_eq!(bool::from_cell(Cell::Int(1)), Some(true));
        assert_eq!(Option::<i64>::from_cell(Cell::Null), Some(None));
        assert_eq!(i64::from_cell(Cell::Text("1".into())), None);
        assert_eq!(u32::from_cell(Cell::Int(-1)), None);
        assert_eq!(Vec::<u8>::from_cell(Cell::Text("ab".into())), Some(b"ab".to_vec()));
    }
}
