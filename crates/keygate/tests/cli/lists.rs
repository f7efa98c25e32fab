//! Every list takes `--limit` (1–100) and `--cursor` (and `--account` where it applies) and says
//! when more pages exist: `{"data": [...], "next_cursor": …}` with `--json`, like the API, and a
//! `More: --cursor …` line on stderr otherwise. Following the cursor to the end yields every row
//! once, newest first.

use std::collections::HashSet;

use crate::support::Sandbox;

/// Follows `next_cursor` from the first page of `keygate --json <args> --limit <limit>` to the
/// last, checking each page, and returns every id in order. The human form of each page must
/// show the same rows and the same cursor.
fn every_page(sandbox: &Sandbox, args: &[&str], limit: usize) -> Vec<String> {
    let limit_arg = limit.to_string();
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let mut page_args = args.to_vec();
        page_args.extend(["--limit", &limit_arg]);
        if let Some(c) = &cursor {
            page_args.extend(["--cursor", c]);
        }
        let page = sandbox.json(&page_args);
        let data = page["data"].as_array().unwrap_or_else(|| panic!("no data: {page}"));
        assert!(data.len() <= limit, "a page holds at most --limit rows: {page}");
        let page_ids: Vec<String> = data.iter().map(|row| row["id"].as_str().expect("an id").to_owned()).collect();

        let human = sandbox.ok(&page_args);
        for id in &page_ids {
            assert!(human.stdout.contains(id.as_str()), "human output lists {id}:\n{}", human.describe());
        }
        ids.extend(page_ids);
        let next = page["next_cursor"].as_str().map(str::to_owned);
        assert!(page.get("next_cursor").is_some(), "next_cursor is always there (null at the end): {page}");
        match &next {
            Some(c) => {
                assert_eq!(data.len(), limit, "only the last page is short: {page}");
                let more = format!("More: --cursor {c}");
                assert!(human.stderr.contains(&more), "human output says how to go on:\n{}", human.describe());
                assert!(!human.stdout.contains("More:"), "the hint goes to stderr:\n{}", human.describe());
            }
            None => {
                assert!(!human.stderr.contains("More:"), "no hint on the last page:\n{}", human.describe());
                return ids;
            }
        }
        cursor = next;
    }
    panic!("keygate {} never reached its last page", args.join(" "));
}

/// The same list in one page.
fn one_page(sandbox: &Sandbox, args: &[&str]) -> Vec<String> {
    let mut all = args.to_vec();
    all.extend(["--limit", "100"]);
    let page = sandbox.json(&all);
    assert!(page["next_cursor"].is_null(), "{page}");
    page["data"].as_array().expect("data").iter().map(|row| row["id"].as_str().expect("an id").to_owned()).collect()
}

fn assert_complete(paged: &[String], whole: &[String], expected: usize) {
    assert_eq!(whole.len(), expected, "{whole:?}");
    let unique: HashSet<&String> = paged.iter().collect();
    assert_eq!(unique.len(), paged.len(), "no row twice: {paged:?}");
    assert_eq!(paged, whole, "every row once, newest first");
}

#[test]
fn keys_list_pages_through_every_key_of_the_account() {
    let sandbox = Sandbox::new();
    sandbox.init();
    let partner = sandbox.json(&["accounts", "create", "--name", "Acme"]);
    let partner_id = partner["account"]["id"].as_str().expect("id").to_owned();
    for i in 0..6 {
        sandbox.json(&["keys", "create", "--name", &format!("operator key {i}")]);
        sandbox.json(&["keys", "create", "--account", &partner_id, "--name", &format!("partner key {i}")]);
    }

    let whole = one_page(&sandbox, &["keys", "list"]);
    let paged = every_page(&sandbox, &["keys", "list"], 3);
    assert_complete(&paged, &whole, 7);

    let account = ["keys", "list", "--account", partner_id.as_str()];
    let whole = one_page(&sandbox, &account);
    let paged = every_page(&sandbox, &account, 2);
    assert_complete(&paged, &whole, 7);
    let operators: HashSet<String> = one_page(&sandbox, &["keys", "list"]).into_iter().collect();
    assert!(paged.iter().all(|id| !operators.contains(id)), "only the partner's keys");

    // Filters hold across pages.
    let filter = ["keys", "list", "--account", partner_id.as_str(), "--name", "partner key"];
    let whole = one_page(&sandbox, &filter);
    let paged = every_page(&sandbox, &filter, 4);
    assert_complete(&paged, &whole, 6);
}

#[test]
fn tenants_list_pages_with_account() {
    let sandbox = Sandbox::new();
    sandbox.init();
    let partner = sandbox.json(&["accounts", "create", "--name", "Acme"]);
    let partner_id = partner["account"]["id"].as_str().expect("id").to_owned();
    for i in 0..5 {
        sandbox.json(&["tenants", "create", "--account", &partner_id, "--name", &format!("Tenant {i}")]);
    }
    sandbox.json(&["tenants", "create", "--name", "The operator's own"]);

    let args = ["tenants", "list", "--account", partner_id.as_str()];
    let whole = one_page(&sandbox, &args);
    let paged = every_page(&sandbox, &args, 2);
    assert_complete(&paged, &whole, 5);
    assert_eq!(one_page(&sandbox, &["tenants", "list"]).len(), 1, "the operator's tenants are its own");
}

#[test]
fn accounts_list_pages() {
    let sandbox = Sandbox::new();
    sandbox.init();
    for name in ["Acme", "Globex", "Initech", "Umbrella"] {
        sandbox.json(&["accounts", "create", "--name", name]);
    }
    let whole = one_page(&sandbox, &["accounts", "list"]);
    let paged = every_page(&sandbox, &["accounts", "list"], 2);
    assert_complete(&paged, &whole, 5);
}

#[test]
fn an_empty_list_says_so() {
    let sandbox = Sandbox::new();
    sandbox.init();
    let doc = sandbox.json(&["tenants", "list"]);
    assert_eq!(doc, serde_json::json!({"data": [], "next_cursor": null}));
    let human = sandbox.ok(&["tenants", "list"]);
    assert!(human.stdout.is_empty(), "{}", human.describe());
    assert!(human.stderr.contains("no tenants"), "{}", human.describe());
}

#[test]
fn limit_must_be_between_1_and_100() {
    let sandbox = Sandbox::new();
    sandbox.init();
    for list in [&["keys", "list"][..], &["tenants", "list"], &["accounts", "list"]] {
        for limit in ["0", "101"] {
            let mut args = list.to_vec();
            args.extend(["--limit", limit]);
            let run = sandbox.fails(&args);
            assert!(run.stderr.contains("limit: must be between 1 and 100"), "{}", run.describe());
        }
        let mut args = list.to_vec();
        args.extend(["--cursor", "acct_not_a_cursor"]);
        let run = sandbox.fails(&args);
        assert!(run.stderr.contains("invalid_request") && run.stderr.contains("cursor"), "{}", run.describe());
    }
}
