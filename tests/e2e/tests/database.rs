//! The database primitive against a PostgreSQL container the test creates on a test server (as a
//! deploy would), reached through an SSH tunnel: the lifecycle's connection as the environment's
//! role, the hooks' own, dumps, and restores of both formats.

use std::time::Instant;

use berth_backends::database::{DbAccess, DbError, DumpFormat, EnvDatabase, Principal, Value};
use berth_e2e::server::{Env, start_postgres};

async fn count(db: &EnvDatabase, name: &str) -> i64 {
    let (_, rows) = db
        .query(name, "SELECT count(*) FROM partner", &[])
        .await
        .unwrap();
    match rows[0][0] {
        Value::Int(n) => n,
        ref other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_admin_and_dumps_of_an_environment_database() {
    let env = Env::new(&format!("db{}", std::process::id()));
    let access = start_postgres(&env).await;
    let db = env
        .database(&env.name, &access)
        .acting_as(Principal::Lifecycle);
    let name = env.name.clone();

    // Typed values, always bound: a hostile string is stored as data.
    db.execute(
        &name,
        "CREATE TABLE partner (id int4 PRIMARY KEY, name text, meta jsonb, photo bytea, active bool, score float8)",
        &[],
    )
    .await
    .unwrap();
    let hostile = "Robert'); DROP TABLE partner; --";
    let inserted = db
        .transaction(
            &name,
            &[
                (
                    "INSERT INTO partner VALUES ($1, $2, $3, $4, $5, $6)".into(),
                    vec![
                        Value::Int(1),
                        Value::Text(hostile.into()),
                        Value::Json(r#"{"vip": true}"#.into()),
                        Value::Bytes(vec![0, 159, 146, 150]),
                        Value::Bool(true),
                        Value::Float(4.5),
                    ],
                ),
                (
                    "INSERT INTO partner (id, name) SELECT g, 'p' || g FROM generate_series(2, $1::int4) g".into(),
                    vec![Value::Int(5000)],
                ),
            ],
        )
        .await
        .unwrap();
    assert_eq!(inserted, [1, 4999]);
    let (columns, rows) = db
        .query(
            &name,
            "SELECT id, name, meta, photo, active, score FROM partner WHERE id = $1",
            &[Value::Int(1)],
        )
        .await
        .unwrap();
    assert_eq!(columns, ["id", "name", "meta", "photo", "active", "score"]);
    assert_eq!(
        rows[0],
        [
            Value::Int(1),
            Value::Text(hostile.into()),
            Value::Json(r#"{"vip":true}"#.into()),
            Value::Bytes(vec![0, 159, 146, 150]),
            Value::Bool(true),
            Value::Float(4.5)
        ]
    );

    // An SQL error is precise, and a failed transaction leaves nothing behind.
    let err = db
        .query(&name, "SELECT * FROM nowhere", &[])
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("relation \"nowhere\" does not exist (42P01)"),
        "{err}"
    );
    let half = db
        .transaction(
            &name,
            &[
                ("DELETE FROM partner".into(), vec![]),
                ("INSERT INTO partner (id) VALUES (1), (1)".into(), vec![]),
            ],
        )
        .await;
    assert!(half.is_err());
    assert_eq!(count(&db, &name).await, 5000);
    assert!(matches!(
        db.query(&name, "SELECT $1::int4", &[Value::Text("1".into())])
            .await,
        Err(DbError::Invalid(_))
    ));

    // The environment's name space, and nothing else.
    for outside in ["postgres", "other", "template1"] {
        let refused = db.query(outside, "SELECT 1", &[]).await.unwrap_err();
        assert!(
            matches!(refused, DbError::Refused(_)),
            "{outside}: {refused}"
        );
    }
    assert!(matches!(
        db.create("other_env", None).await,
        Err(DbError::Refused(_))
    ));
    let neighbour = env.database("neighbour", &access);
    assert!(matches!(
        neighbour.query(&name, "SELECT 1", &[]).await,
        Err(DbError::Refused(_))
    ));

    // Copy, rename, drop.
    let copy = format!("{name}_copy");
    db.create(&copy, Some(&name)).await.unwrap();
    assert_eq!(count(&db, &copy).await, 5000);
    let old = format!("{name}_old");
    db.rename(&copy, &old).await.unwrap();
    assert_eq!(db.list().await.unwrap(), [name.clone(), old.clone()]);
    db.drop(&old).await.unwrap();

    // Roles live in the same name space, but for the host's own; a password with quotes is data.
    let role = format!("{name}_reader");
    db.create_role(&role, "it's a 'secret'").await.unwrap();
    for refused in [
        "postgres".to_string(),
        format!("{name}_hooks"),
        format!("{name}_lifecycle"),
        format!("{name}_restorer"),
    ] {
        assert!(
            matches!(
                db.create_role(&refused, "x").await,
                Err(DbError::Refused(_))
            ),
            "{refused}"
        );
    }
    let reader = env.database(
        &env.name,
        &DbAccess {
            user: role.clone(),
            password: "it's a 'secret'".into(),
            ..access.clone()
        },
    );
    reader.list().await.expect("the new role logs in");
    db.drop_role(&role).await.unwrap();

    hooks_read_and_write_the_tables_and_nothing_more(&env, &access).await;

    // Dump and restore, streamed.
    let mut dump = Vec::new();
    let started = Instant::now();
    let size = db.dump(&name, DumpFormat::Custom, &mut dump).await.unwrap();
    eprintln!("custom dump of {size} bytes in {:?}", started.elapsed());
    assert_eq!(size as usize, dump.len());
    assert_eq!(&dump[..5], b"PGDMP");
    let restored = format!("{name}_restored");
    db.create(&restored, None).await.unwrap();
    db.restore(
        &restored,
        DumpFormat::Custom,
        &mut std::io::Cursor::new(dump.clone()),
    )
    .await
    .unwrap();
    assert_eq!(count(&db, &restored).await, 5000);
    let broken = db
        .restore(
            &restored,
            DumpFormat::Custom,
            &mut std::io::Cursor::new(b"not a dump".to_vec()),
        )
        .await;
    assert!(
        broken.unwrap_err().to_string().contains("restore into"),
        "a broken archive is a clear error"
    );
    assert_eq!(count(&db, &restored).await, 5000, "and loses nothing");

    // A plain dump (pg_dump's `\restrict` lines included) restores as SQL, not through psql.
    let mut plain = Vec::new();
    db.dump(&name, DumpFormat::Plain, &mut plain).await.unwrap();
    let text = String::from_utf8_lossy(&plain);
    assert!(
        text.contains("COPY public.partner"),
        "{}",
        &text[..500.min(text.len())]
    );
    let from_plain = format!("{name}_plain");
    db.create(&from_plain, None).await.unwrap();
    let started = Instant::now();
    db.restore(
        &from_plain,
        DumpFormat::Plain,
        &mut std::io::Cursor::new(plain.clone()),
    )
    .await
    .unwrap();
    eprintln!(
        "plain restore of {} bytes in {:?}",
        plain.len(),
        started.elapsed()
    );
    assert_eq!(count(&db, &from_plain).await, 5000);
    let (_, same) = db
        .query(
            &from_plain,
            "SELECT name, meta::text, photo FROM partner WHERE id = 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        same[0],
        [
            Value::Text(hostile.into()),
            Value::Text(r#"{"vip": true}"#.into()),
            Value::Bytes(vec![0, 159, 146, 150])
        ]
    );
    // What the dump created is the environment's role's, as if Odoo had made it.
    let (_, owners) = db
        .query(
            &from_plain,
            "SELECT DISTINCT tableowner::text FROM pg_tables WHERE schemaname = 'public' \
             UNION SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1",
            &[Value::Text(from_plain.clone())],
        )
        .await
        .unwrap();
    assert_eq!(owners, [[Value::Text(name.clone())]]);
    // Only the lifecycle restores.
    let hooks = env.database(&env.name, &access);
    let refused = hooks
        .restore(
            &from_plain,
            DumpFormat::Plain,
            &mut std::io::Cursor::new(plain),
        )
        .await
        .unwrap_err();
    assert!(matches!(refused, DbError::Refused(_)), "{refused}");

    plugins_reach_the_database_only_as_granted(&env, &access).await;

    let started = Instant::now();
    env.docker(&env.name).restart("db").await.unwrap();
    eprintln!(
        "PostgreSQL container restart through SSH: {:?}",
        started.elapsed()
    );
    env.docker(&env.name).remove("db").await.unwrap();
}

/// The hooks' own role: it reads and writes the environment's tables — those made after it first
/// connected, and those restored, too — and creates nothing.
async fn hooks_read_and_write_the_tables_and_nothing_more(env: &Env, access: &DbAccess) {
    let name = env.name.as_str();
    let hooks = env.database(name, access);
    assert_eq!(hooks.principal(), Principal::Hooks);
    assert_eq!(count(&hooks, name).await, 5000);
    let updated = hooks
        .execute(
            name,
            "UPDATE partner SET active = false WHERE id <= $1",
            &[Value::Int(10)],
        )
        .await
        .unwrap();
    assert_eq!(updated, 10);
    let created = hooks
        .execute(name, "CREATE TABLE hooks_own (x int)", &[])
        .await
        .unwrap_err();
    assert!(
        created.to_string().contains("permission denied"),
        "{created}"
    );
    let lifecycle = env.database(name, access).acting_as(Principal::Lifecycle);
    lifecycle
        .execute(
            name,
            "CREATE TABLE later (id serial PRIMARY KEY, x int)",
            &[],
        )
        .await
        .unwrap();
    hooks
        .execute(name, "INSERT INTO later (x) VALUES (1)", &[])
        .await
        .expect("a table the environment's role made later is the hooks' too");
    lifecycle
        .execute(name, "UPDATE partner SET active = true", &[])
        .await
        .unwrap();
}

/// The `database` interface through the sandbox: grants per capability and per environment, the
/// name space, dumps as blobs.
async fn plugins_reach_the_database_only_as_granted(env: &Env, access: &DbAccess) {
    use berth_e2e::{Harness, component};
    use berth_runtime::{Runtime, RuntimeOptions, ServerAccess, Verdict, WitError};

    let rt = Runtime::new(RuntimeOptions::default()).unwrap();
    let plugin = rt.load_file(&component("misbehave")).await.unwrap();
    let run = async |run_env: &str, grant_env: &str, grants: &[&str], point: &str, db: &str| {
        let mut h = Harness::new(run_env, "misbehave", &[]);
        h.invocation.grants = Harness::new(grant_env, "misbehave", grants)
            .invocation
            .grants
            .clone();
        h.lend(std::sync::Arc::new(ServerAccess {
            pool: env.pool.clone(),
            target: env.target.clone(),
            database: Some(access.clone()),
        }));
        let outcome = plugin.handle(&rt, &h.invocation, &h.event(point, db)).await;
        (outcome, h.log.messages())
    };
    let denied = |outcome: Result<Verdict, berth_runtime::InvokeError>| match outcome
        .unwrap_err()
        .plugin_error()
    {
        Some(WitError::Denied(msg)) => msg.clone(),
        other => panic!("expected denied, got {other:?}"),
    };
    let name = env.name.as_str();

    let (outcome, messages) = run(name, name, &["database"], "before:db-query", name).await;
    assert!(matches!(outcome.unwrap(), Verdict::Continue));
    assert_eq!(messages, ["query said: bound"]);

    let msg = denied(run(name, name, &[], "before:db-query", name).await.0);
    assert!(msg.contains("capability `database`"), "{msg}");
    let msg = denied(
        run(name, "elsewhere", &["database"], "before:db-query", name)
            .await
            .0,
    );
    assert!(msg.contains("does not hold"), "{msg}");
    let msg = denied(
        run(name, name, &["database"], "before:db-query", "postgres")
            .await
            .0,
    );
    assert!(
        msg.contains("outside the environment's name space"),
        "{msg}"
    );

    let msg = denied(
        run(name, name, &["database"], "before:db-dump", name)
            .await
            .0,
    );
    assert!(msg.contains("capability `database.dump`"), "{msg}");
    let (outcome, messages) = run(name, name, &["database.dump"], "before:db-dump", name).await;
    assert!(matches!(outcome.unwrap(), Verdict::Continue));
    assert!(
        messages[0].starts_with("dump of ") && messages[0].ends_with("starts with PGDMP"),
        "{messages:?}"
    );
}
