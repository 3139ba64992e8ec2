//! Property tests of shape inference: the merge is associative and commutative, absorbing values
//! one by one equals merging their shapes, shapes survive their JSON form, and every value
//! validates against the settled schema of the data it came from. The same laws are checked on
//! records carrying map-like objects (a `deps` object with keys drawn from hundreds of names),
//! whose union passes the map key limit, so collapsing into a map is exercised, and the settled
//! form (maps told apart from records) is checked to be the same whatever the order, as are the
//! columns (sparse records, whose fields depend on a record's kind, kept whole as JSON).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use improv_ledger::Shape;
use improv_ledger::schema::{EnumRule, json_schema};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<u64>().prop_map(|u| json!(u)),
        (-1.0e9f64..1.0e9).prop_map(|f| json!(f)),
        prop::sample::select(vec![
            "open",
            "paid",
            "",
            "NaN",
            "2025-01-02",
            "2025-01-02T03:04:05Z",
            "a@b.co",
            "https://x.example/y",
            "67e55044-10b1-426f-9247-bb680e5fe0c8",
            "ключ",
            "🙂",
        ])
        .prop_map(|s| json!(s)),
        "[a-z]{0,60}".prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec!["a", "b", "c", "e_mail", "email", "x.y", "名"]),
                inner,
                0..5
            )
            .prop_map(|m| {
                Value::Object(
                    m.into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

/// A record with a map-like `deps` object (up to 120 keys out of 400 names, string or integer
/// values) beside a few record fields: three of them can pass the map key limit of 200.
fn wide() -> impl Strategy<Value = Value> {
    (
        prop::collection::btree_map(
            (0u32..400).prop_map(|i| {
                if i % 3 == 0 {
                    format!("@scope/pkg-{i}")
                } else {
                    format!("pkg{i}")
                }
            }),
            prop_oneof![
                "[0-9]\\.[0-9]".prop_map(Value::String),
                any::<u8>().prop_map(|n| json!(n))
            ],
            0..120,
        ),
        leaf(),
        any::<bool>(),
    )
        .prop_map(|(deps, name, private)| {
            let deps: Map<String, Value> = deps.into_iter().collect();
            let mut record = json!({"deps": deps, "name": name});
            if private {
                record["private"] = json!(true);
            }
            record
        })
}

/// An event whose payload's fields depend on its kind (three of eighteen each): a sparse record.
fn event() -> impl Strategy<Value = Value> {
    (0..6usize, any::<i32>()).prop_map(|(kind, n)| {
        let payload: Map<String, Value> = (0..3)
            // Values of two kinds, so that the payload is not taken for a map.
            .map(|f| {
                let value = if f == 0 {
                    json!(n)
                } else {
                    json!(n.to_string())
                };
                (format!("f{}", kind * 3 + f), value)
            })
            .collect();
        json!({"kind": kind, "payload": payload})
    })
}

fn shape_of(values: &[Value]) -> Shape {
    let mut shape = Shape::default();
    for v in values {
        shape.absorb(v);
    }
    shape
}

fn merged(a: &Shape, b: &Shape) -> Shape {
    let mut out = a.clone();
    out.merge(b);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn merge_is_associative(
        a in prop::collection::vec(value(), 0..6),
        b in prop::collection::vec(value(), 0..6),
        c in prop::collection::vec(value(), 0..6),
    ) {
        let (a, b, c) = (shape_of(&a), shape_of(&b), shape_of(&c));
        prop_assert_eq!(merged(&a, &merged(&b, &c)), merged(&merged(&a, &b), &c));
    }

    #[test]
    fn merge_is_commutative(
        a in prop::collection::vec(value(), 0..6),
        b in prop::collection::vec(value(), 0..6),
    ) {
        let (a, b) = (shape_of(&a), shape_of(&b));
        prop_assert_eq!(merged(&a, &b), merged(&b, &a));
    }

    #[test]
    fn absorbing_equals_merging_single_shapes(values in prop::collection::vec(value(), 0..12)) {
        let folded = values.iter().fold(Shape::default(), |acc, v| merged(&acc, &Shape::of(v)));
        prop_assert_eq!(shape_of(&values), folded);
    }

    #[test]
    fn any_split_of_the_data_gives_the_same_shape(
        values in prop::collection::vec(value(), 0..12),
        cut in 0usize..12,
    ) {
        let cut = cut.min(values.len());
        let (left, right) = values.split_at(cut);
        prop_assert_eq!(merged(&shape_of(right), &shape_of(left)), shape_of(&values));
    }

    #[test]
    fn inferring_from_text_equals_inferring_from_values(values in prop::collection::vec(value(), 0..12)) {
        let mut streamed = Shape::default();
        for v in &values {
            streamed.absorb_json(&v.to_string()).unwrap();
        }
        prop_assert_eq!(streamed, shape_of(&values));
    }

    #[test]
    fn shapes_survive_their_json_form(values in prop::collection::vec(value(), 0..8)) {
        let shape = shape_of(&values);
        let back: Shape = serde_json::from_str(&serde_json::to_string(&shape).unwrap()).unwrap();
        prop_assert_eq!(back, shape);
    }

    #[test]
    fn every_value_validates_against_the_schema_of_its_data(
        entries in prop::collection::vec(value(), 1..25),
        min_records in 1u64..5,
    ) {
        let entries: Vec<Value> = entries.into_iter().map(|v| match v {
            Value::Object(_) => v,
            other => json!({"v": other}),
        }).collect();
        let shape = shape_of(&entries);
        let schema = json_schema("t", &shape, &[], EnumRule { max_values: 8, min_records });
        let validator = jsonschema::draft202012::new(&schema).unwrap();
        for entry in &entries {
            let errors: Vec<String> = validator.iter_errors(entry).map(|e| e.to_string()).collect();
            prop_assert!(errors.is_empty(), "{} against {}: {:?}", entry, schema, errors);
        }
    }

    #[test]
    fn wide_merge_is_associative_and_commutative(
        a in prop::collection::vec(wide(), 0..4),
        b in prop::collection::vec(wide(), 0..4),
        c in prop::collection::vec(wide(), 0..4),
    ) {
        let (a, b, c) = (shape_of(&a), shape_of(&b), shape_of(&c));
        prop_assert_eq!(merged(&a, &merged(&b, &c)), merged(&merged(&a, &b), &c));
        prop_assert_eq!(merged(&a, &b), merged(&b, &a));
    }

    #[test]
    fn wide_absorbing_streaming_and_merging_agree(
        values in prop::collection::vec(wide(), 0..8),
        cut in 0usize..8,
    ) {
        let folded = values.iter().fold(Shape::default(), |acc, v| merged(&acc, &Shape::of(v)));
        let absorbed = shape_of(&values);
        prop_assert_eq!(&absorbed, &folded);
        let mut streamed = Shape::default();
        for v in &values {
            streamed.absorb_json(&v.to_string()).unwrap();
        }
        prop_assert_eq!(&streamed, &absorbed);
        let (left, right) = values.split_at(cut.min(values.len()));
        prop_assert_eq!(&merged(&shape_of(right), &shape_of(left)), &absorbed);
        let back: Shape = serde_json::from_str(&serde_json::to_string(&absorbed).unwrap()).unwrap();
        prop_assert_eq!(back, absorbed);
    }

    #[test]
    fn maps_are_told_apart_whatever_the_order(
        values in prop::collection::vec(prop_oneof![wide(), value()], 1..10),
        seed in any::<u64>(),
    ) {
        use rand::{SeedableRng, seq::SliceRandom};
        let mut shuffled = values.clone();
        shuffled.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        let settled = shape_of(&values).settled_form();
        prop_assert_eq!(&shape_of(&shuffled).settled_form(), &settled);
        let half = shuffled.len() / 2;
        prop_assert_eq!(
            &merged(&shape_of(&shuffled[half..]), &shape_of(&shuffled[..half])).settled_form(),
            &settled
        );
        prop_assert_eq!(&settled.settled_form(), &settled, "idempotent");
    }

    #[test]
    fn sparse_records_are_told_apart_whatever_the_order(
        values in prop::collection::vec(prop_oneof![event(), event(), value()], 1..16),
        seed in any::<u64>(),
    ) {
        use rand::{SeedableRng, seq::SliceRandom};
        use improv_ledger::schema::{ColumnKind, JsonReason, columns};
        let mut shuffled = values.clone();
        shuffled.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        let shape = shape_of(&values);
        let settled = columns(&shape);
        prop_assert_eq!(&columns(&shape_of(&shuffled)), &settled);
        let half = shuffled.len() / 2;
        prop_assert_eq!(
            &columns(&merged(&shape_of(&shuffled[half..]), &shape_of(&shuffled[..half]))),
            &settled
        );
        let settled_shape = shape.settled_form();
        let payload = settled_shape.at(&"payload".parse().unwrap()).and_then(|p| p.object.as_ref());
        if payload.is_some_and(|p| p.is_sparse()) && shape.kinds() == [improv_ledger::shape::Kind::Object] {
            let column = settled.iter().find(|c| c.name == "payload");
            prop_assert!(
                column.is_none_or(|c| c.kind == ColumnKind::Json(JsonReason::Sparse)),
                "{:?}", settled
            );
            prop_assert!(settled.iter().all(|c| !c.name.starts_with("payload_")), "{:?}", settled);
        }
    }

    #[test]
    fn every_wide_value_validates_and_maps_are_maps(
        entries in prop::collection::vec(wide(), 1..10),
    ) {
        let shape = shape_of(&entries);
        let schema = json_schema("t", &shape, &[], EnumRule { max_values: 8, min_records: 2 });
        let validator = jsonschema::draft202012::new(&schema).unwrap();
        for entry in &entries {
            let errors: Vec<String> = validator.iter_errors(entry).map(|e| e.to_string()).collect();
            prop_assert!(errors.is_empty(), "{} against {}: {:?}", entry, schema, errors);
        }
        let deps = shape.at(&"deps".parse().unwrap()).unwrap();
        if deps.object.as_ref().unwrap().map.is_some() {
            prop_assert!(schema["properties"]["deps"]["additionalProperties"].is_object(), "{}", schema);
        }
        prop_assert!(schema["properties"]["deps"]["properties"].as_object().is_none_or(|p| p.len() <= improv_ledger::shape::MAP_KEY_LIMIT));
    }
}
