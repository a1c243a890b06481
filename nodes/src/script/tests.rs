use rhai::{Dynamic, Scope};
use serde_json::json;

use super::*;
use crate::diag::Pos;

fn scope(event: serde_json::Value) -> Scope<'static> {
    let mut scope = Scope::new();
    scope.push_constant("event", to_dynamic(&event));
    scope.push_constant("nodes", Dynamic::from_map(Map::new()));
    scope.push_constant("vars", to_dynamic(&json!({"source": "crm"})));
    scope.push_constant("tenant", "default");
    scope.push_constant("flow", Dynamic::UNIT);
    scope.push_constant("run", Dynamic::UNIT);
    scope
}

fn origin() -> Origin {
    Origin {
        line: 10,
        col: 5,
        block_col: None,
    }
}

fn eval(text: &str, event: serde_json::Value) -> Result<serde_json::Value, ScriptError> {
    let expr = Expr::compile(text, origin(), FLOW_SCOPE).expect("compiles");
    let value = expr.eval(&mut scope(event), None)?;
    Ok(to_json(&value).unwrap())
}

#[test]
fn expressions_read_the_event() {
    let event = json!({"body": {"email": "A@B.C", "first": "Ada", "last": "L"}});
    assert_eq!(
        eval("event.body.email.to_lower()", event.clone()),
        Ok(json!("a@b.c"))
    );
    assert_eq!(
        eval(r#"event.body.first + " " + event.body.last"#, event.clone()),
        Ok(json!("Ada L"))
    );
    assert_eq!(eval("event.body.missing", event.clone()), Ok(json!(null)));
    assert_eq!(
        eval("event.body.missing.deeper.still", event.clone()),
        Ok(json!(null))
    );
    assert_eq!(eval("event.nothing[\"x\"]", event.clone()), Ok(json!(null)));
    assert_eq!(
        eval("if event.body.first == \"Ada\" { 1 } else { 2 }", event),
        Ok(json!(1))
    );
}

#[test]
fn a_syntax_error_points_into_the_expression() {
    let e = Expr::compile("event.body +* 2", origin(), FLOW_SCOPE).unwrap_err();
    assert_eq!((e.pos.line, e.pos.col), (10, 5 + 13 - 1));
    assert!(
        e.message
            .starts_with("invalid expression `event.body +* 2`"),
        "{}",
        e.message
    );
}

#[test]
fn an_unknown_variable_is_a_load_error_with_a_hint() {
    let e = Expr::compile("contact", origin(), FLOW_SCOPE).unwrap_err();
    assert_eq!((e.pos.line, e.pos.col), (10, 5));
    assert!(
        e.message.contains("unknown variable `contact`"),
        "{}",
        e.message
    );
    assert!(e.message.contains(r#"'"contact"'"#), "{}", e.message);
    assert!(Expr::compile("item", origin(), FLOW_SCOPE).is_err());
    assert!(Expr::compile("item", origin(), LOOP_SCOPE).is_ok());
}

#[test]
fn scripts_work_on_a_copy_of_the_scope() {
    let expr =
        Expr::compile_script("event.body.x = 1; event.body.x + 1", origin(), FLOW_SCOPE).unwrap();
    let mut scope = scope(json!({"body": {}}));
    assert_eq!(expr.eval(&mut scope, None).unwrap().as_int(), Ok(2));
    let event = to_json(&scope.get_value::<Dynamic>("event").unwrap()).unwrap();
    assert_eq!(event, json!({"body": {}}));
}

#[test]
fn script_variables_do_not_leak_between_evaluations() {
    let expr = Expr::compile_script("let x = 40; x + 2", origin(), FLOW_SCOPE).unwrap();
    let mut scope = scope(json!({}));
    let len = scope.len();
    assert_eq!(expr.eval(&mut scope, None).unwrap().as_int(), Ok(42));
    assert_eq!(scope.len(), len);
}

#[test]
fn runaway_scripts_fail_within_bounds() {
    let expr = Expr::compile_script("loop { }", origin(), FLOW_SCOPE).unwrap();
    let e = expr.eval(&mut scope(json!({})), None).unwrap_err();
    assert!(e.message.contains("Too many operations"), "{}", e.message);

    let expr =
        Expr::compile_script(r#"let s = "x"; loop { s += s; }"#, origin(), FLOW_SCOPE).unwrap();
    let e = expr.eval(&mut scope(json!({})), None).unwrap_err();
    assert!(e.message.contains("too large"), "{}", e.message);

    let expr = Expr::compile_script("fn f(n) { f(n + 1) } f(0)", origin(), FLOW_SCOPE).unwrap();
    assert!(expr.eval(&mut scope(json!({})), None).is_err());

    // A wall-clock deadline stops a slow script before its operation budget.
    let expr = Expr::compile_script(
        "let a = []; for i in 0..900000 { a.push(i.to_string()); a.pop(); }",
        origin(),
        FLOW_SCOPE,
    )
    .unwrap();
    let e = expr
        .eval(
            &mut scope(json!({})),
            Some(std::time::Duration::from_millis(1)),
        )
        .unwrap_err();
    assert!(e.message.contains("time limit"), "{}", e.message);
}

#[test]
fn there_is_no_file_or_eval_access() {
    assert!(Expr::compile_script(r#"eval("1")"#, origin(), FLOW_SCOPE).is_err());
    let expr = Expr::compile_script(r#"import "x" as y; 1"#, origin(), FLOW_SCOPE).unwrap();
    assert!(expr.eval(&mut scope(json!({})), None).is_err());
}

#[test]
fn runtime_errors_carry_the_file_position() {
    let expr = Expr::compile("event.body.n + \"a\" - 1", origin(), FLOW_SCOPE).unwrap();
    let e = expr
        .eval(&mut scope(json!({"body": {"n": 1}})), None)
        .unwrap_err();
    assert_eq!(e.pos.map(|p| p.line), Some(10));
    assert!(e.message.contains("Function not found"), "{}", e.message);
}

#[test]
fn templates_render() {
    let t = Template::compile("contact.${event.type}.${event.n}", origin(), FLOW_SCOPE).unwrap();
    let out = t
        .render(&mut scope(json!({"type": "created", "n": 3})), None)
        .unwrap();
    assert_eq!(out, "contact.created.3");
    let t = Template::compile("a $${literal} ${ #{x: \"}\"}.x }", origin(), FLOW_SCOPE).unwrap();
    assert_eq!(
        t.render(&mut scope(json!({})), None).unwrap(),
        "a ${literal} }"
    );
    assert_eq!(
        Template::compile("plain", origin(), FLOW_SCOPE)
            .unwrap()
            .as_literal(),
        Some("plain")
    );
}

#[test]
fn template_errors_point_at_the_expression() {
    let errors = Template::compile("x.${event.}", origin(), FLOW_SCOPE).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].pos.line, 10);
    assert!(errors[0].pos.col >= 5 + 4, "{:?}", errors[0].pos);
    let errors = Template::compile("x.${event", origin(), FLOW_SCOPE).unwrap_err();
    assert!(errors[0].message.contains("unclosed"));
}

#[test]
fn origins_of_quoted_and_block_scalars() {
    let source = "a: '\"x\"'\nb: |\n    let x = 1;\n    x\n";
    assert_eq!(
        Origin::of(
            source,
            Pos {
                line: 1,
                col: 4,
                offset: 3
            }
        )
        .col,
        5
    );
    let block = Origin::of(
        source,
        Pos {
            line: 2,
            col: 4,
            offset: 12,
        },
    );
    assert_eq!((block.line, block.col), (3, 5));
    assert_eq!(block.map(rhai::Position::new(2, 3)), Pos::new(4, 7));
}

#[test]
fn expressions_cannot_mutate_the_scope_through_methods() {
    let expr = Expr::compile("event.body.tags.push(1)", origin(), FLOW_SCOPE).unwrap();
    let e = expr
        .eval(&mut scope(json!({"body": {"tags": []}})), None)
        .unwrap_err();
    assert!(
        e.message.contains("cannot be called on constant"),
        "{}",
        e.message
    );
}

#[test]
fn keywords_read_as_properties_after_a_dot() {
    let mut scope = scope(json!({}));
    let mut nodes = Map::new();
    nodes.insert(
        "pause".into(),
        to_dynamic(&json!({"until": "2030-01-01T00:00:00Z"})),
    );
    nodes.insert("loop".into(), to_dynamic(&json!([1, 2, 3])));
    nodes.insert("call".into(), to_dynamic(&json!({"x": 1})));
    scope.set_or_push("nodes", Dynamic::from_map(nodes));
    for (text, want) in [
        ("nodes.pause.until", json!("2030-01-01T00:00:00Z")),
        ("nodes.loop.len()", json!(3)),
        ("nodes.call.x + 1", json!(2)),
        ("nodes?.call?.x", json!(1)),
    ] {
        let expr =
            Expr::compile(text, origin(), FLOW_SCOPE).unwrap_or_else(|e| panic!("{text}: {e:?}"));
        assert_eq!(
            to_json(&expr.eval(&mut scope, None).unwrap()).unwrap(),
            want,
            "{text}"
        );
    }
    // Keywords keep their meaning elsewhere.
    let expr = Expr::compile_script(
        "let n = 0; loop { n += 1; if n > 2 { break; } } n",
        origin(),
        FLOW_SCOPE,
    )
    .unwrap();
    assert_eq!(expr.eval(&mut scope, None).unwrap().as_int(), Ok(3));
}

#[test]
fn a_failure_on_a_chain_says_which_part_is_missing() {
    let body = json!({"body": {"email": "a@b.c", "first_name": "Ada"}});
    let e = eval("event.body.emial.to_upper()", body.clone()).unwrap_err();
    assert!(
        e.message.starts_with(
            "`event.body.emial` is missing: `event.body` has no field `emial`; did you mean `email`?"
        ) && e.message.contains("`.to_upper()` cannot be called on it"),
        "{}",
        e.message
    );
    let e = eval("event.body.phone.number.len()", body).unwrap_err();
    assert!(
        e.message.starts_with("`event.body.phone` is missing: `event.body` has no field `phone`; it has `email`, `first_name`"),
        "{}",
        e.message
    );
    // A field of a text or a list cannot be read: the message says what
    // the parent is.
    let e = eval("event.body.email", json!({"body": "just text"})).unwrap_err();
    assert_eq!(
        e.message,
        "`event.body` is text, not a map, so it has no field `email`"
    );
    let e = eval("event.body.items.first", json!({"body": {"items": [1, 2]}})).unwrap_err();
    assert_eq!(
        e.message,
        "`event.body.items` is a list, not a map, so it has no field `first`"
    );
    // A null field, with the default `??` gives.
    assert_eq!(
        eval(
            r#"(event.body.email ?? "").to_upper()"#,
            json!({"body": {}})
        ),
        Ok(json!(""))
    );
    let e = eval(
        "event.body.email.to_upper()",
        json!({"body": {"email": null}}),
    )
    .unwrap_err();
    assert!(
        e.message.starts_with("`event.body.email` is null"),
        "{}",
        e.message
    );
}

#[test]
fn the_time_limit_holds_for_costly_operations_too() {
    // Each `sha256` of 4 MiB is one operation that takes milliseconds: the
    // time limit is checked often enough that it cannot run far past it.
    let script = Expr::compile_script(
        "let s = \"x\"; s.pad(4000000, \"y\"); loop { let h = sha256(s); }",
        origin(),
        FLOW_SCOPE,
    )
    .expect("compiles");
    let started = std::time::Instant::now();
    let e = script
        .eval(
            &mut scope(json!({})),
            Some(std::time::Duration::from_millis(100)),
        )
        .unwrap_err();
    let took = started.elapsed();
    assert!(e.message.contains("time limit"), "{}", e.message);
    assert!(
        took < std::time::Duration::from_millis(800),
        "it ran {took:?}"
    );
}
