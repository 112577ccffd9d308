//! Whether a database already holds data: tools that write fake payments (the demo) must refuse
//! a database someone uses.

use sqlx::PgPool;

/// Every table outside the system schemas that holds at least one row, as `schema.table`.
/// sqlx's own `_sqlx_migrations` does not count: an empty migrated database holds no data.
pub async fn tables_with_rows(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_schema::text, table_name::text FROM information_schema.tables
          WHERE table_type = 'BASE TABLE'
            AND table_schema NOT IN ('pg_catalog', 'information_schema')
            AND table_schema NOT LIKE 'pg\\_%'
            AND table_name <> '_sqlx_migrations'
          ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await?;
    let mut occupied = Vec::new();
    for (schema, table) in tables {
        let quoted = format!("\"{}\".\"{}\"", schema.replace('"', "\"\""), table.replace('"', "\"\""));
        let (any,): (bool,) =
            sqlx::query_as(&format!("SELECT EXISTS (SELECT 1 FROM {quoted})")).fetch_one(pool).await?;
        if any {
            occupied.push(format!("{schema}.{table}"));
        }
    }
    Ok(occupied)
}
