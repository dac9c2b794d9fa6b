//! Unit tests of `client::acl`.

use super::*;
use crate::config::{MaskedString, UserConfig};

fn user(name: &str, pass: &str, commands: &[&str], keys: &[&str]) -> UserConfig {
    UserConfig {
        name: name.into(),
        password: MaskedString::new(pass),
        commands: commands.iter().map(|s| s.to_string()).collect(),
        keys: keys.iter().map(|s| s.to_string()).collect(),
        channels: Vec::new(),
    }
}

fn security(requirepass: Option<&str>, users: Vec<UserConfig>) -> Security {
    let auth = AuthConfig {
        requirepass: requirepass.map(MaskedString::new),
        users,
        ..AuthConfig::default()
    };
    Security::from_config(&auth, &CommandsConfig::default(), &BackendConfig::default()).unwrap()
}

fn run(sec: &Security, client: &ClientAuth, args: &[&str]) -> Option<String> {
    let t = CommandTable::builtin();
    check(sec, client, &t, &Request::from_args(args))
        .map(|b| String::from_utf8_lossy(&b).trim_end().to_string())
}

#[test]
fn nothing_is_served_before_auth() {
    let sec = security(Some("pw"), vec![]);
    let mut c = ClientAuth::new(&sec);
    assert!(!c.authenticated());
    assert_eq!(
        run(&sec, &c, &["get", "k"]).unwrap(),
        "-NOAUTH Authentication required."
    );
    assert_eq!(
        run(&sec, &c, &["PING"]).unwrap(),
        "-NOAUTH Authentication required."
    );
    assert_eq!(
        run(&sec, &c, &["nosuch"]).unwrap(),
        "-NOAUTH Authentication required."
    );
    assert_eq!(
        run(&sec, &c, &["get"]).unwrap(),
        "-ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(run(&sec, &c, &["auth", "x"]), None);
    assert_eq!(run(&sec, &c, &["hello", "3"]), None);
    assert_eq!(run(&sec, &c, &["quit"]), None);
    assert!(sec.authenticate(b"default", b"bad").is_none());
    c.login(sec.authenticate(b"default", b"pw").unwrap());
    assert!(c.authenticated());
    assert_eq!(run(&sec, &c, &["get", "k"]), None);
    assert_eq!(run(&sec, &c, &["ACL", "whoami"]).unwrap(), "$7\r\ndefault");
    assert!(run(&sec, &c, &["replicaof", "no", "one"])
        .unwrap()
        .contains("topology"));
}

#[test]
fn auth_hello_and_quit_pass_whatever_the_command_table_says() {
    // A Redis 6 `COMMAND` spells the flag `no-auth`; a table without them must not lock out.
    let sec = security(Some("pw"), vec![user("u", "x", &["+get"], &["~*"])]);
    let empty = CommandTable::from_command_reply(&crate::resp::Value::Array(vec![])).unwrap();
    let mut c = ClientAuth::new(&sec);
    for args in [&["AUTH", "pw"][..], &["hello", "3"], &["QUIT"]] {
        assert_eq!(check(&sec, &c, &empty, &Request::from_args(args)), None);
    }
    c.login(sec.authenticate(b"u", b"x").unwrap());
    assert_eq!(run(&sec, &c, &["auth", "u", "x"]), None);
    assert!(run(&sec, &c, &["set", "k", "v"]).is_some());
}

#[test]
fn without_auth_config_only_the_policy_applies() {
    let sec = security(None, vec![]);
    let c = ClientAuth::new(&sec);
    assert!(c.authenticated() && !sec.auth_required());
    assert_eq!(run(&sec, &c, &["get", "k"]), None);
    assert!(run(&sec, &c, &["shutdown"]).is_some());
}

#[test]
fn users_are_held_to_their_rules() {
    let sec = security(
        None,
        vec![
            user(
                "app",
                "apppw",
                &["+@all", "-@dangerous", "+info"],
                &["~app:*"],
            ),
            user(
                "ro",
                &format!("#{}", hex(sha256(b"ropw"))),
                &["+@read"],
                &["~*"],
            ),
        ],
    );
    assert!(sec.authenticate(b"default", b"apppw").is_none());
    assert!(sec.authenticate(b"app", b"ropw").is_none());
    assert!(sec.authenticate(b"nosuch", b"apppw").is_none());
    let mut app = ClientAuth::new(&sec);
    app.login(sec.authenticate(b"app", b"apppw").unwrap());
    assert_eq!(run(&sec, &app, &["get", "app:1"]), None);
    assert_eq!(run(&sec, &app, &["info"]), None);
    assert_eq!(run(&sec, &app, &["acl", "WHOAMI"]).unwrap(), "$3\r\napp");
    assert_eq!(
        run(&sec, &app, &["publish", "app:news", "x"]).unwrap(),
        format!("-{NOPERM_CHANNEL}")
    );
    assert_eq!(run(&sec, &app, &["ping"]), None);
    assert_eq!(run(&sec, &app, &["auth", "x"]), None);
    assert_eq!(
        run(&sec, &app, &["get", "other"]).unwrap(),
        format!("-{NOPERM_KEY}")
    );
    assert_eq!(
        run(&sec, &app, &["mset", "app:1", "v", "b", "v"]).unwrap(),
        format!("-{NOPERM_KEY}")
    );
    assert_eq!(
        run(&sec, &app, &["FLUSHALL"]).unwrap(),
        "-NOPERM this user has no permissions to run the 'flushall' command"
    );
    assert_eq!(
        run(&sec, &app, &["config", "get", "x"]).unwrap(),
        "-NOPERM this user has no permissions to run the 'config|get' command"
    );
    let mut ro = ClientAuth::new(&sec);
    ro.login(sec.authenticate(b"ro", b"ropw").unwrap());
    assert_eq!(run(&sec, &ro, &["get", "anything"]), None);
    assert!(run(&sec, &ro, &["set", "k", "v"])
        .unwrap()
        .starts_with("-NOPERM"));
    assert!(run(&sec, &ro, &["nosuchcmd"])
        .unwrap()
        .contains("'nosuchcmd'"));
}

fn hex(d: [u8; 32]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn channels_are_checked_for_publish_and_the_subscribes() {
    let mut u = user("p", "x", &["+@all"], &["~app:*"]);
    u.channels = vec!["&news:*".into()];
    let sec = security(None, vec![u]);
    let mut c = ClientAuth::new(&sec);
    c.login(sec.authenticate(b"p", b"x").unwrap());
    assert_eq!(run(&sec, &c, &["PUBLISH", "news:1", "m"]), None);
    assert_eq!(run(&sec, &c, &["spublish", "news:1", "m"]), None);
    assert!(run(&sec, &c, &["publish", "other", "m"]).is_some());
    assert!(run(&sec, &c, &["subscribe", "news:1", "other"]).is_some());
    assert_eq!(run(&sec, &c, &["psubscribe", "news:*"]), None);
    assert!(run(&sec, &c, &["psubscribe", "news:1*"]).is_some());
    assert_eq!(run(&sec, &c, &["unsubscribe", "other"]), None);
    // The default user (requirepass) has every channel, as Redis's default user.
    let sec = security(Some("pw"), vec![]);
    let mut c = ClientAuth::new(&sec);
    c.login(sec.authenticate(b"default", b"pw").unwrap());
    assert_eq!(run(&sec, &c, &["publish", "any", "m"]), None);
}

#[test]
fn config_problems_name_their_key() {
    let bad = |requirepass: Option<&str>, users: Vec<UserConfig>| {
        let auth = AuthConfig {
            requirepass: requirepass.map(MaskedString::new),
            users,
            ..AuthConfig::default()
        };
        match Security::from_config(&auth, &CommandsConfig::default(), &BackendConfig::default()) {
            Err(ConfigError::Invalid { key, problem }) => format!("{key}: {problem}"),
            other => panic!("expected an error, got {other:?}"),
        }
    };
    assert!(bad(Some(""), vec![]).starts_with("auth.requirepass"));
    assert!(bad(None, vec![user("a", "", &[], &[])]).contains("empty"));
    assert!(bad(None, vec![user("a b", "x", &[], &[])]).starts_with("auth.users"));
    assert!(bad(Some("x"), vec![user("default", "y", &[], &[])]).contains("not both"));
    assert!(bad(
        None,
        vec![user("a", "x", &[], &[]), user("a", "y", &[], &[])]
    )
    .contains("twice"));
    assert!(bad(None, vec![user("a", "x", &["+@nosuch"], &[])]).contains("\"a\""));
    assert!(bad(None, vec![user("a", "x", &[], &["app:*"])]).contains("~"));
    assert!(bad(
        None,
        vec![user("a", &format!("#{}", "z".repeat(64)), &[], &[])]
    )
    .contains("SHA-256"));
    let err = bad(None, vec![user("a", "s3cret", &["+@nosuch"], &[])]);
    assert!(!err.contains("s3cret"), "{err}");
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let sec = security(
        Some("s3cret"),
        vec![user("u", "t0psecret", &["+@all"], &["~*"])],
    );
    let shown = format!("{sec:?} {:?}", ClientAuth::new(&sec));
    assert!(
        !shown.contains("s3cret") && !shown.contains("t0psecret"),
        "{shown}"
    );
    assert!(!shown.contains(&hex(sha256(b"s3cret"))), "{shown}");
}

#[test]
fn constant_time_eq_compares() {
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"ab"));
}
