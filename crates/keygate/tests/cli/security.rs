//! SPEC §2 at rest: the files keygate creates are private to its user, and a process started with
//! another hash secret than the database was made with refuses to start and says why, instead of
//! answering every key `invalid_api_key`.

use std::os::unix::fs::PermissionsExt;

use crate::support::{Sandbox, Server, free_port};

fn mode(sandbox: &Sandbox, name: &str) -> Option<u32> {
    std::fs::metadata(sandbox.file(name)).ok().map(|m| m.permissions().mode() & 0o777)
}

#[test]
fn database_and_secret_files_are_private() {
    let sandbox = Sandbox::new();
    let (_, operator) = sandbox.init();
    let mut server = Server::start(&sandbox, &[]);
    assert_eq!(server.http().get("/v1/api-keys", &operator).status, 200);
    for name in ["keygate.db", "keygate.db-wal", "keygate.secret"] {
        assert_eq!(mode(&sandbox, name), Some(0o600), "{name} is mode 0600");
    }
    assert!(server.terminate().success());
    assert_eq!(mode(&sandbox, "keygate.db"), Some(0o600));
}

#[test]
fn an_existing_world_readable_database_is_tightened() {
    let sandbox = Sandbox::new();
    sandbox.init();
    std::fs::set_permissions(sandbox.file("keygate.db"), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    sandbox.ok(&["keys", "list"]);
    assert_eq!(mode(&sandbox, "keygate.db"), Some(0o600));
}

#[test]
fn another_hash_secret_refuses_to_start_and_says_why() {
    let mut sandbox = Sandbox::new();
    sandbox.set_env("KEYGATE_HASH_SECRET", "the-first-secret-of-this-database-0123456789");
    let (_, operator) = sandbox.init();
    sandbox.set_env("KEYGATE_HASH_SECRET", "another-secret-entirely-0123456789-abcdefgh");

    let run = sandbox.fails(&["keys", "list"]);
    assert!(run.stderr.contains("hash secret does not match"), "{}", run.describe());
    assert!(run.stderr.contains("KEYGATE_HASH_SECRET"), "it says what to do: {}", run.describe());
    assert!(!run.all_output().contains("another-secret-entirely"), "the secret itself is never printed");

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let log = Server::spawn(&sandbox, &["serve", "--listen", &listen], port)
        .err()
        .expect("serve refuses to start with another secret");
    assert!(log.contains("hash secret does not match"), "{log}");

    // With the original secret back, everything works, the old keys included.
    sandbox.set_env("KEYGATE_HASH_SECRET", "the-first-secret-of-this-database-0123456789");
    let mut server = Server::start(&sandbox, &[]);
    assert_eq!(server.http().get("/v1/api-keys", &operator).status, 200);
    assert!(server.terminate().success());
}
