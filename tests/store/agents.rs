//! Declared agents: a declaration creates or updates the agent, and every new input schema
//! is recorded with who declared it, once, however many processes declare it at once.

use agentq::domain::{AgentDeclaration, AgentDefaults};
use serde_json::{Value, json};

use crate::support::store::temp_store;

fn declaration(schema: Value, by: &str) -> AgentDeclaration {
    AgentDeclaration {
        name: "py_upper".into(),
        description: "upper-cases text".into(),
        input_schema: schema,
        defaults: AgentDefaults {
            max_attempts: Some(2),
            ..Default::default()
        },
        declared_by: by.into(),
        key_id: None,
    }
}

#[tokio::test]
async fn a_new_schema_counts_the_version_up_and_is_recorded_once() {
    let (store, _db) = temp_store().await;
    let first = store
        .declare_agent(declaration(json!({"type": "object"}), "w1"))
        .await
        .unwrap();
    assert!(first.created && first.schema_changed);
    assert_eq!(first.agent.version, 1);
    // the same schema, its keys in another order, is the same schema
    let schema = json!({"required": ["text"], "type": "object"});
    let same_again = store
        .declare_agent(declaration(json!({"type": "object"}), "w2"))
        .await
        .unwrap();
    assert!(!same_again.created && !same_again.schema_changed);
    assert_eq!(same_again.agent.version, 1);
    // many declarations of one new schema at once: one change, one version
    let racing = futures::future::join_all(
        (0..8).map(|i| store.declare_agent(declaration(schema.clone(), &format!("w{i}")))),
    )
    .await;
    let changed: Vec<_> = racing
        .into_iter()
        .map(|d| d.unwrap())
        .filter(|d| d.schema_changed)
        .collect();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].agent.version, 2);
    let listed = store.declared_agents().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].version, 2);
    assert_eq!(listed[0].input_schema, schema);
    assert_eq!(listed[0].defaults.max_attempts, Some(2));
    let changes = store.agent_schema_changes("py_upper").await.unwrap();
    let versions: Vec<(u32, &str)> = changes
        .iter()
        .map(|c| (c.version, c.declared_by.as_str()))
        .collect();
    assert_eq!(versions[0], (1, "w1"));
    assert_eq!(versions.len(), 2);
    assert_eq!(changes[1].input_schema, schema);
    assert!(store.agent_schema_changes("nope").await.unwrap().is_empty());
}
