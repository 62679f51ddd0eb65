//! Whole-file checks through `config::parse`: positions, and every problem reported at once.

use super::{collect, parse, ConfigError};

pub(super) const MIN: &str = "[[backend]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n";

pub(super) fn errors(text: &str) -> Vec<String> {
    match parse(text, "t.toml") {
        Ok(_) => Vec::new(),
        Err(e) => e.messages(),
    }
}

/// The problems of a file, asserting that each of `want` starts one of them.
#[track_caller]
pub(super) fn assert_errors(text: &str, want: &[&str]) {
    let got = errors(text);
    for w in want {
        assert!(got.iter().any(|g| g.starts_with(w)), "no error starts with {w:?}; got {got:#?}");
    }
}

#[test]
fn minimal_config_is_valid() {
    let c = parse(MIN, "t.toml").unwrap();
    assert_eq!(c.backends.len(), 1);
    assert_eq!(c.backends[0].address.to_string(), "127.0.0.1:1");
}

#[test]
fn typo_points_at_line() {
    let text = format!("[server]\nrequest_timout = \"5s\"\n{MIN}");
    let e = parse(&text, "t.toml").unwrap_err().to_string();
    assert!(e.starts_with("t.toml:2:1: unknown field `request_timout`"), "{e}");
}

#[test]
fn duplicate_names_and_bad_duration_are_all_reported() {
    let text = format!("[health]\ninterval = \"5 parsecs\"\n{MIN}");
    let e = parse(&text, "t.toml").unwrap_err().to_string();
    assert!(e.contains("t.toml:2:"), "{e}");
    let text = format!("{MIN}{MIN}");
    let e = parse(&text, "t.toml").unwrap_err().to_string();
    assert!(e.contains("t.toml:5:8: duplicate backend name \"a\""), "{e}");
}

#[test]
fn short_secret_rejected() {
    let text = format!("[session]\nsecret = \"short\"\n{MIN}");
    let e = parse(&text, "t.toml").unwrap_err().to_string();
    assert!(e.contains("t.toml:2:10: session.secret: must be at least 32 bytes (got 5)"), "{e}");
}

#[test]
fn cluster_keys_are_checked() {
    let text = format!(
        "[cluster]\nstore = \"redis\"\nredis_url = \"redis://\"\nsnapshot_file = \"pins.jsonl\"\nredis_timeout = \"0s\"\n{MIN}"
    );
    let e = parse(&text, "t.toml").unwrap_err().to_string();
    assert!(e.contains("t.toml:5:1: cluster.redis_timeout must be greater than 0"), "{e}");
    assert!(e.contains("t.toml:3:1: invalid cluster.redis_url"), "{e}");
    assert!(e.contains("t.toml:4:1: cluster.snapshot_file is for store = \"memory\""), "{e}");
    let text = format!("[cluster]\nsnapshot_file = \"/no/such/dir/pins.jsonl\"\n{MIN}");
    let e = parse(&text, "t.toml").unwrap_err().to_string();
    assert!(e.contains("t.toml:2:1: cluster.snapshot_file: directory /no/such/dir does not exist"), "{e}");
    let text = format!("[cluster]\nstore = \"redis\"\nredis_url = \"redis://10.0.0.1:6379/2\"\n{MIN}");
    assert!(parse(&text, "t.toml").is_ok());
}

#[test]
fn redis_topology_keys_are_checked() {
    let text = format!(
        "[cluster]\nstore = \"redis\"\nsentinels = [\"127.0.0.1:26379\", \"nope\"]\nredis_cluster = [\"127.0.0.1:0\"]\n{MIN}"
    );
    let e = parse(&text, "t.toml").unwrap_err().to_string();
    assert!(e.contains("t.toml:3:13: cluster.sentinels: \"nope\" is not host:port"), "{e}");
    assert!(e.contains("t.toml:4:17: cluster.redis_cluster: \"127.0.0.1:0\" is not host:port"), "{e}");
    assert!(e.contains("t.toml:4:1: cluster.redis_cluster and cluster.sentinels exclude each other"), "{e}");
    assert!(e.contains("t.toml:3:1: cluster.sentinels needs cluster.sentinel_master"), "{e}");
    let text = format!("[cluster]\nsentinel_master = \"m\"\ninstance_name = \"a b\"\n{MIN}");
    let e = parse(&text, "t.toml").unwrap_err().to_string();
    assert!(e.contains("t.toml:2:1: cluster.sentinel_master needs cluster.sentinels"), "{e}");
    assert!(e.contains("t.toml:3:1: cluster.instance_name must not contain whitespace"), "{e}");
    let text = format!("[cluster]\nredis_cluster = [\"127.0.0.1:7000\"]\n{MIN}");
    assert!(parse(&text, "t.toml").unwrap_err().to_string().contains("cluster.redis_cluster needs store = \"redis\""));
    let text = format!(
        "[cluster]\nstore = \"redis\"\nsentinels = [\"127.0.0.1:26379\", \"[::1]:26380\"]\nsentinel_master = \"m\"\n{MIN}"
    );
    assert!(parse(&text, "t.toml").is_ok());
}

#[test]
fn no_backend() {
    let e = parse("", "t.toml").unwrap_err().to_string();
    assert!(e.contains("at least one [[backend]]"), "{e}");
}

#[test]
fn type_errors_do_not_hide_each_other_or_later_problems() {
    let text = "[server]\n\
                threads = \"four\"\n\
                request_timout = \"5s\"\n\
                max_connections = 0\n\
                [session]\n\
                max_entries = -1\n\
                cookie_same_site = \"Sideways\"\n\
                [[backend]]\n\
                name = \"a\"\n\
                address = \"127.0.0.1:1\"\n\
                weight = \"heavy\"\n\
                [log]\n\
                format = \"xml\"\n";
    let got = errors(text);
    assert_eq!(got.len(), 7, "{got:#?}");
    assert_errors(
        text,
        &[
            "t.toml:2:11: invalid type: string \"four\", expected usize",
            "t.toml:3:1: unknown field `request_timout`",
            "t.toml:4:1: server.max_connections must be greater than 0",
            "t.toml:6:15: invalid value: integer `-1`",
            "t.toml:7:20: unknown variant `Sideways`",
            "t.toml:11:10: invalid type: string \"heavy\"",
            "t.toml:13:10: unknown variant `xml`",
        ],
    );
    // In file order.
    let lines: Vec<usize> = got.iter().map(|m| m.split(':').nth(1).unwrap().parse().unwrap()).collect();
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{got:#?}");
}

#[test]
fn a_backend_without_its_address_is_reported_with_the_others() {
    let text = "[[backend]]\nname = \"a\"\n\n[[backend]]\nname = \"b\"\naddress = \"127.0.0.1:2\"\nweight = 0\n\
                [admin]\nlisten = \"nowhere\"\n";
    assert_errors(
        text,
        &["t.toml:1:1: missing field `address`", "t.toml:7:10: backend weight", "t.toml:9:10: invalid address"],
    );
    // The only backend lacks its address: no extra "at least one [[backend]]".
    let got = errors("[[backend]]\nname = \"a\"\n");
    assert_eq!(got, ["t.toml:1:1: missing field `address`"]);
    // A wrong address is one problem, not also a backend without an address.
    let got = errors("[[backend]]\nname = \"a\"\naddress = \"0.0.0.0:1\"\n");
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(got[0].starts_with("t.toml:3:11: invalid backend address"), "{got:#?}");
}

#[test]
fn dotted_keys_and_inline_tables_are_taken_out_cleanly() {
    let text = format!(
        "server.threads = \"x\"\nhealth = {{ path = 5, interval = \"1s\" }}\nadmin = {{ token = \"t\", listen = 7 }}\n{MIN}"
    );
    assert_errors(&text, &["t.toml:1:18: invalid type", "t.toml:2:19: invalid type", "t.toml:3:33: invalid type"]);
    assert_eq!(errors(&text).len(), 3, "{:#?}", errors(&text));
}

#[test]
fn syntax_errors_are_reported_with_the_rest() {
    let text = format!("[server]\nthreads = = 2\nmax_connections = \"many\"\n{MIN}");
    assert_errors(&text, &["t.toml:2:", "t.toml:3:19: invalid type"]);
    // Two syntax errors apart are both reported.
    let text = format!("[server]\nthreads = = 2\nmax_connections = 5\nidle_timeout = \"1s\" x\n{MIN}");
    assert_errors(&text, &["t.toml:2:", "t.toml:4:"]);
    // An unclosed array is one problem, not one per following line.
    let text =
        format!("[server]\nlisten = [\"127.0.0.1:1\",\n\n[admin]\ntoken = \"x\"\n[log]\nlevel = \"info\"\n{MIN}");
    assert_eq!(errors(&text).len(), 1, "{:#?}", errors(&text));
}

#[test]
fn a_file_that_is_not_utf8_points_at_the_first_bad_byte_and_is_still_checked() {
    let bytes = b"[log]\n# caf\xe9\nlevel = \"info\"\n[server]\nthreads = \"x\"\n[[backend]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n";
    let got = match collect::check_bytes(bytes, "t.toml") {
        Err(ConfigError::Invalid(v)) => v,
        other => panic!("{other:?}"),
    };
    assert!(got[0].starts_with("t.toml:2:6: the file is not UTF-8 (byte 0xe9"), "{got:#?}");
    assert!(got.iter().any(|m| m.starts_with("t.toml:5:11: invalid type")), "{got:#?}");
}

#[test]
fn admin_listen_must_not_overlap_a_client_listener() {
    let with = |server: &str, admin: &str| format!("[server]\nlisten = {server}\n[admin]\nlisten = \"{admin}\"\n{MIN}");
    let overlap = "t.toml:4:10: admin.listen";
    assert_errors(&with("\"127.0.0.1:8080\"", "127.0.0.1:8080"), &[overlap]);
    assert_errors(&with("\"0.0.0.0:8080\"", "127.0.0.1:8080"), &[overlap]);
    assert_errors(&with("[\"10.0.0.1:80\", \"127.0.0.1:8080\"]", "0.0.0.0:8080"), &[overlap]);
    assert_errors(&with("\"[::]:8080\"", "[::1]:8080"), &[overlap]);
    for (server, admin) in [
        ("\"127.0.0.1:8080\"", "127.0.0.1:9090"),
        ("\"10.0.0.1:8080\"", "127.0.0.1:8080"),
        ("\"[::]:8080\"", "127.0.0.1:8080"),
        ("\"127.0.0.1:0\"", "127.0.0.1:0"),
    ] {
        assert_eq!(errors(&with(server, admin)), Vec::<String>::new(), "{server} / {admin}");
    }
    assert!(parse(&with("\"127.0.0.1:9090\"", ""), "t.toml").is_ok());
    // The default admin address against a client listener on its port: pointed at server.listen.
    assert_errors(
        &format!("[server]\nlisten = \"0.0.0.0:9090\"\n{MIN}"),
        &["t.toml:2:10: admin.listen 127.0.0.1:9090"],
    );
}

#[test]
fn log_level_words_are_levels() {
    let with = |level: &str| format!("[log]\nlevel = \"{level}\"\n{MIN}");
    for good in ["info", "DEBUG", "off", "warn", "info,stickylb=debug", "stickylb::proxy=trace,warn", "access=off"] {
        assert_eq!(errors(&with(good)), Vec::<String>::new(), "{good}");
    }
    for bad in ["verbose", "warning", "", "info,stickylb=loud", "stickylb"] {
        assert_errors(&with(bad), &["t.toml:2:9: "]);
    }
    assert!(errors(&with("verbose"))[0].contains("unknown log level \"verbose\""));
}

#[test]
fn backend_addresses_and_threads_have_limits() {
    let text = "[server]\nthreads = 1025\n[[backend]]\nname = \"a\"\naddress = \"0.0.0.0:80\"\n\
                [[backend]]\nname = \"b\"\naddress = \"127.0.0.1:0\"\n";
    assert_errors(
        text,
        &["t.toml:2:11: server.threads must be at most 1024", "t.toml:5:11: invalid backend address", "t.toml:8:11: "],
    );
    assert!(parse(&format!("[server]\nthreads = 1024\n{MIN}"), "t.toml").is_ok());
}

#[test]
fn second_round_keys_are_checked_at_their_place() {
    let text = format!(
        "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"nonsense\"]\n[session]\nsoap_max_bytes = 10\n\
         [balance]\nbounded_load = 0.5\n{MIN}route = \"a.b\"\n[[backend]]\nname = \"b\"\naddress = \"127.0.0.1:2\"\nroute = \"n1\"\n\
         [[backend]]\nname = \"c\"\naddress = \"127.0.0.1:3\"\nroute = \"n1\"\n"
    );
    let got = errors(&text);
    for (line, what) in [
        (2, "trusted_proxies"),
        (4, "soap_max_bytes"),
        (6, "bounded_load"),
        (10, "invalid route"),
        (18, "duplicate route"),
    ] {
        assert!(
            got.iter().any(|g| g.starts_with(&format!("t.toml:{line}:")) && g.contains(what)),
            "{what} at line {line}: {got:#?}"
        );
    }
    let ok = parse(
        &format!("[server]\ntrusted_proxies = [\"127.0.0.1\", \"fd00::/8\"]\n{MIN}route = \"node1\"\n"),
        "t.toml",
    )
    .unwrap();
    assert_eq!(ok.server.trusted.len(), 2);
    assert_eq!(ok.backends[0].route.as_ref().map(|r| r.get_ref().as_str()), Some("node1"));
}
