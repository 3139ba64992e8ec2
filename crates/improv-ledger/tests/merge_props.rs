//! Property tests of shape inference: the merge is associative and commutative, absorbing values
//! one by one equals merging their shapes, shapes survive their JSON form, and every value
//! validates against the settled schema of the data it came from.
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
}
