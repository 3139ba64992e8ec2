use stats::mean;

#[test]
fn mean_of_a_few_numbers() {
    assert_eq!(mean(&[1.0, 2.0, 3.0, 6.0]), Some(3.0));
}

#[test]
fn mean_of_nothing_is_none() {
    assert_eq!(mean(&[]), None);
}
