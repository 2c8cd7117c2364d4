//! The fast NNEF text reader (`engine::nnef_text`) against tract's: the same syntax tree on
//! tract's standard library (and our copy of it is tract's), on documents that use every rule
//! of the grammar (tract's own parser tests), and `None`, never a panic, on text it does not
//! read. `tests/payload.rs` compares the two on every packed model's graph.

use edge_runtime::engine::nnef::{framework, STDLIB};
use edge_runtime::engine::nnef_text::{parse_document, parse_fragments};
use tract_nnef::ast::parse as tract;

#[test]
fn the_standard_library_copy_reads_as_tracts_own() {
    let ours = parse_fragments(STDLIB).expect("our reader reads the standard library");
    assert_eq!(ours, tract::parse_fragments(STDLIB).unwrap());
    assert_eq!(
        ours,
        tract_nnef::framework::stdlib(),
        "nnef_stdlib.nnef is not the standard library of the tract-nnef in use: copy its \
         stdlib.nnef again"
    );
}

#[test]
fn the_reader_is_built_as_tracts_own() {
    let (ours, theirs) = (framework(), tract_nnef::nnef());
    assert_eq!(ours.stdlib, theirs.stdlib);
    let ids = |n: &tract_nnef::framework::Nnef| -> Vec<String> {
        n.registries.iter().map(|r| r.id.0.to_string()).collect()
    };
    assert_eq!(ids(&ours)[..2], ids(&theirs)[..]);
    let loaders = |n: &tract_nnef::framework::Nnef| -> Vec<String> {
        n.resource_loaders
            .iter()
            .map(|l| l.name().to_string())
            .collect()
    };
    assert_eq!(loaders(&ours), loaders(&theirs));
}

/// Documents exercising each rule: fragments with generics, defaults, tuple and array types,
/// bodies with every operator level, if/else, comprehensions, subscripts and ranges, unary
/// operators, tuples, escaped identifiers, strings with escapes, comments, odd spacing.
const DOCUMENTS: &[&str] = &[
    "version 1.0; graph foo() -> () {}",
    r#"version 1.0;
# a comment
extension tract_registry tract_core;
extension KHR_enable_operator_expressions ;

fragment fizz<? = scalar>( shape: integer[] ) -> ( output: tensor<?> );
fragment reshape<?>( input: tensor<?>, shape: integer[], axis_start: integer = 0,
    axis_count: integer = -1 ) -> ( output: tensor<?> );
fragment conv( input: tensor<scalar>, filter: tensor<scalar>, bias: tensor<scalar> = 0.0,
    border: string = 'constant', padding: (integer,integer)[] = [], stride: integer[] = [],
    groups: integer = 1, flags: (logical, string) = (true, "x") ) -> ( output: tensor<scalar> );
fragment props() -> (properties: (string, tensor<scalar>)[])
{
  properties = [("a", tract_core_cast(1, to = "i64")), ("b\"c", 'd\'e')];
}
fragment lrn( input: tensor<scalar>, size: integer[], alpha: scalar = 1.0, beta: scalar = 0.5 )
-> ( output: tensor<scalar> )
{
    sigma = bias + alpha * box(sqr(input), size = size, normalize = true);
    output = input / (sigma ^ beta);
}
fragment q( x: tensor<scalar>, bits: integer, signed: logical, symmetric: logical )
-> ( y: tensor<scalar> )
{
    r = scalar(2 ^ bits - 1 - integer(signed && symmetric));
    p = scalar(2 ^ (bits - 1) - integer(symmetric) if signed else 0);
    size = [for i in range_of(output_size) yield output_size[i] * sampling_rate[i]];
    t = x[1:] + x[:2] + x[a:b] + x[:];
    c = (a + b) <= (c + d) || a >= b && c != d || a == -b || a < b || a > +b;
    u = - (a + b) * !c / 3e-5 + 1.5E+3 - 0.0e1 * inf - -inf;
    output, index = max_pool_with_index(input, size = size);
    [a, b] = split(x);
    (c, d) = split(x);
    e = ();
    f = [];
    g = [[[[0.0]]]];
}

graph network( image, i"odd/name:0" ) -> ( logits ) {
  image = external<scalar>(shape = [1, 3, 224, 224]);
  i"odd/name:0" = external(shape = [2]);
  i"w.q" = variable<scalar>(label = "w.q", shape = [32, 3, 3, 3]);
  x = edgefleet_quantize_u8(image, scale = 53.595024, zero_point = 114);
  y = conv(x, i"w.q", 0.0, dilation = [1, 1], padding = [(1, 1), (1, 1)], border = "constant");
  logits = add( mul( y , 0.33333334 ) ,unsqueeze(s,axes=[0]) ) ;
}
"#,
];

#[test]
fn every_rule_reads_as_tracts_own() {
    for doc in DOCUMENTS {
        let theirs = tract::parse_document(doc).unwrap_or_else(|e| panic!("tract: {e}"));
        assert_eq!(parse_document(doc).as_ref(), Some(&theirs), "{doc}");
    }
}

#[test]
fn text_it_does_not_read_is_none_not_a_panic() {
    let deep = format!(
        "version 1.0; graph g() -> (y) {{ y = {}0{}; }}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    for bad in [
        "",
        "version 1.0;",
        "version 1.0; graph g() -> (y) { y = ; }",
        "version 1.0; graph g() -> (y) { y = f(x; }",
        "version 1.0; graph g() -> (y) { y = \"unterminated; }",
        "version 1.0; graph g() -> (y) { y = 1; } trailing",
        "version 1.0; fragment f( x: tensor<scalar> ) -> ( y: tensor<scalar> ) graph",
        "version x; graph g() -> () {}",
        "version 1.0; graph g() -> (y) { y = i\"é\\",
        &deep,
    ] {
        assert_eq!(parse_document(bad), None, "{bad:.80}");
    }
}
