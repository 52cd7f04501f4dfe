//! The project's copies of the public wire fixtures (`tests/fixtures/`) checked against the OpenAPI
//! contract. The contract lives outside the crate (`../shared/spec/openapi.json`); where it is not
//! checked out, the schema checks print a note and pass.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

const POLL_FIXTURE: &str = "poll_command_envelope.json";
const NOTIFY_FIXTURE: &str = "jsonrpc_notify_response.json";

fn project_fixture(name: &str) -> Value {
    read_json(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("parse {}: {error}", path.display()))
}

/// `../shared/spec`, if the shared contract is checked out next to the crate.
fn shared_spec_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/spec");
    if dir.join("openapi.json").is_file() {
        Some(dir)
    } else {
        println!("skipped: ../shared not present");
        None
    }
}

/// Resolves a local `$ref` such as `#/components/schemas/JsonRpcPolledCommand`.
fn resolve<'a>(openapi: &'a Value, reference: &str) -> &'a Value {
    let pointer = reference
        .strip_prefix('#')
        .unwrap_or_else(|| panic!("only local references are supported: {reference}"));
    openapi
        .pointer(pointer)
        .unwrap_or_else(|| panic!("dangling reference {reference}"))
}

fn schema<'a>(openapi: &'a Value, name: &str) -> &'a Value {
    resolve(openapi, &format!("#/components/schemas/{name}"))
}

fn required_fields(schema: &Value) -> Vec<&str> {
    schema["required"]
        .as_array()
        .map(|fields| fields.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn missing_fields<'a>(object: &Value, schema: &'a Value) -> Vec<&'a str> {
    required_fields(schema)
        .into_iter()
        .filter(|field| object.get(field).is_none())
        .collect()
}

#[test]
fn poll_fixture_commands_carry_every_required_field() {
    let Some(spec) = shared_spec_dir() else {
        return;
    };
    let openapi = read_json(&spec.join("openapi.json"));
    let envelope = project_fixture(POLL_FIXTURE);
    let list_schema = schema(&openapi, "PolledCommandList");
    assert!(missing_fields(&envelope, list_schema).is_empty());

    // The command schema is chosen by the discriminator, as the contract says.
    let mapping = &list_schema["properties"]["commands"]["items"]["discriminator"]["mapping"];
    let mut schemas_used = BTreeSet::new();
    for command in envelope["commands"].as_array().expect("commands array") {
        let command_type = command["command_type"].as_str().unwrap_or("jsonrpc");
        let reference = mapping[command_type]
            .as_str()
            .unwrap_or_else(|| panic!("no schema for command_type {command_type}"));
        let missing = missing_fields(command, resolve(&openapi, reference));
        assert!(
            missing.is_empty(),
            "{reference}: {command} lacks {missing:?}"
        );
        schemas_used.insert(reference.rsplit('/').next().unwrap_or_default());
    }
    assert_eq!(
        schemas_used,
        BTreeSet::from(["JsonRpcPolledCommand", "SessionTerminationPolledCommand"]),
        "the fixture exercises both command types"
    );
}

#[test]
fn notify_fixture_uses_only_properties_the_response_payload_allows() {
    let Some(spec) = shared_spec_dir() else {
        return;
    };
    let openapi = read_json(&spec.join("openapi.json"));
    let payload = project_fixture(NOTIFY_FIXTURE);
    let payload_schema = schema(&openapi, "TunnelResponsePayload");
    assert_eq!(
        payload_schema["additionalProperties"],
        Value::Bool(false),
        "the check below relies on a closed schema"
    );
    let allowed = payload_schema["properties"]
        .as_object()
        .expect("TunnelResponsePayload properties");
    let fields = payload.as_object().expect("the payload is an object");
    let unknown: Vec<&String> = fields
        .keys()
        .filter(|key| !allowed.contains_key(*key))
        .collect();
    assert!(
        unknown.is_empty(),
        "not allowed by TunnelResponsePayload: {unknown:?}"
    );
    assert!(missing_fields(&payload, payload_schema).is_empty());

    let response_types = &schema(&openapi, "ResponsePayloadType")["enum"];
    let response_types = response_types.as_array().expect("ResponsePayloadType enum");
    assert!(
        response_types.contains(&payload["resp_type"]),
        "{}",
        payload["resp_type"]
    );
}

#[test]
fn project_fixture_copies_match_the_shared_spec() {
    let Some(spec) = shared_spec_dir() else {
        return;
    };
    for name in [POLL_FIXTURE, NOTIFY_FIXTURE] {
        assert_eq!(
            project_fixture(name),
            read_json(&spec.join("fixtures").join(name)),
            "tests/fixtures/{name} drifted from ../shared/spec/fixtures/{name}"
        );
    }
}

/// The crate's own wire types read the project fixtures (no ../shared needed).
#[test]
fn crate_wire_types_read_the_fixtures() {
    use mcp_tunnel::wire::{
        Command, CommandKind, PollEnvelope, RespType, ResponsePayload, RpcShape,
    };

    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(POLL_FIXTURE),
    )
    .expect("read poll fixture");
    let envelope: PollEnvelope = serde_json::from_str(&text).expect("poll envelope");
    assert_eq!(envelope.commands.len(), 2);
    let first = Command::from_json(&envelope.commands[0]).expect("first command");
    assert_eq!(first.request_id, "cmd_fixture_jsonrpc");
    assert_eq!(first.shard_token.expose(), "fixture:jsonrpc");
    assert_eq!(first.raw_channel.as_deref(), Some("harpoon"));
    assert_eq!(first.header("X-Test"), Some("alpha"));
    assert_eq!(first.response_timeout, None);
    let CommandKind::JsonRpc(body) = &first.kind else {
        panic!("first command is jsonrpc: {:?}", first.kind);
    };
    let shape = RpcShape::of(body.get()).expect("JSON-RPC object");
    assert_eq!(shape.id, Some(Value::from("rpc-1")));
    assert_eq!(shape.method.as_deref(), Some("tools/list"));
    let second = Command::from_json(&envelope.commands[1]).expect("second command");
    assert_eq!(second.request_id, "cmd_fixture_session_end");
    assert!(matches!(second.kind, CommandKind::SessionTermination));

    let fixture = project_fixture(NOTIFY_FIXTURE);
    let payload: ResponsePayload =
        serde_json::from_value(fixture.clone()).expect("response payload");
    assert_eq!(payload.resp_type, RespType::JsonrpcNotify);
    let mut back: Value = serde_json::from_str(&serde_json::to_string(&payload).unwrap()).unwrap();
    assert!(back.get("shard_token").is_none());
    // We omit an empty resp_headers ("omit the field when empty"); otherwise a faithful round trip.
    let mut expected = fixture;
    if expected["resp_headers"] == serde_json::json!({}) {
        expected.as_object_mut().unwrap().remove("resp_headers");
    }
    back.as_object_mut().unwrap().remove("resp_headers");
    assert_eq!(back, expected);
}
