//! Tree ensembles: `TreeEnsembleClassifier` and `TreeEnsembleRegressor` (ai.onnx.ml 1–3, what
//! skl2onnx and onnxmltools write) and `TreeEnsemble` (ai.onnx.ml 5), parsed into one flattened
//! [`edge_kernels::trees::Forest`] and run as one op: the walks, the aggregation, the base
//! values, the post-transform and, for classifiers, the winning label. tract 0.23.9 runs
//! `TreeEnsembleClassifier` as a generic interpreter (400–650× ONNX Runtime's time per row on a
//! gradient-boosted model) and has no regressor.
//!
//! The scores are ONNX Runtime's, case for case (`tree_ensemble_aggregator.h`): one target
//! takes only `PROBIT`; a binary classifier whose leaves name one class writes both columns from
//! one score (`[1 − p, p]`, or `[σ(−s), σ(s)]` with `LOGISTIC` when weights can be negative)
//! and picks its label on `p > 0.5` or `s > 0`; a multi-class one picks the largest score among
//! the classes a leaf reached.

use std::sync::Arc;

use edge_kernels::trees::{Aggregate, Cmp, Forest, LeafWeight, NodeSpec};
use tract_nnef::tract_core::internal::*;
#[cfg(feature = "onnx")]
use tract_onnx::{
    model::{OnnxOpRegister, ParsingContext},
    pb::{NodeProto, TensorProto},
    tract_hir::internal::*,
};

#[cfg(feature = "onnx")]
use super::{exactly, tensor_bytes, tensor_floats};
use super::{rows_f32, Labels, Post};

#[cfg(feature = "onnx")]
/// Registers the three operators.
pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert("TreeEnsembleClassifier", classifier);
    reg.insert("TreeEnsembleRegressor", regressor);
    reg.insert("TreeEnsemble", ensemble_v5);
}

#[cfg(feature = "onnx")]
/// A float attribute array, or its `_as_tensor` form (ai.onnx.ml 3).
fn floats(node: &NodeProto, name: &str) -> TractResult<Option<Vec<f32>>> {
    if let Some(v) = node.get_attr_opt_vec::<f32>(name)? {
        return Ok(Some(v));
    }
    match node.get_attr_opt::<&TensorProto>(&format!("{name}_as_tensor"))? {
        Some(t) => Ok(Some(tensor_floats(t)?)),
        None => Ok(None),
    }
}

#[cfg(feature = "onnx")]
fn ints(node: &NodeProto, name: &str) -> TractResult<Vec<i64>> {
    Ok(node
        .get_attr_opt_slice::<i64>(name)?
        .map(<[i64]>::to_vec)
        .unwrap_or_default())
}

#[cfg(feature = "onnx")]
/// A non-negative id attribute array of `n` entries.
fn ids(node: &NodeProto, name: &str, n: usize) -> TractResult<Vec<usize>> {
    let v = exactly(node, name, ints(node, name)?, n)?;
    v.into_iter()
        .map(|i| {
            usize::try_from(i)
                .map_err(|_| format_err!("{} '{}': {name} holds {i}", node.op_type, node.name))
        })
        .collect()
}

#[cfg(feature = "onnx")]
fn cmp_of(mode: &str) -> TractResult<Option<Cmp>> {
    Ok(Some(match mode {
        "LEAF" => return Ok(None),
        "BRANCH_LEQ" => Cmp::Leq,
        "BRANCH_LT" => Cmp::Lt,
        "BRANCH_GTE" => Cmp::Gte,
        "BRANCH_GT" => Cmp::Gt,
        "BRANCH_EQ" => Cmp::Eq,
        "BRANCH_NEQ" => Cmp::Neq,
        other => bail!("node mode '{other}'"),
    }))
}

#[cfg(feature = "onnx")]
/// The nodes of an ai.onnx.ml 1–3 ensemble.
fn nodes_v3(node: &NodeProto) -> TractResult<Vec<NodeSpec>> {
    let n = ints(node, "nodes_nodeids")?.len();
    ensure!(n > 0, "{} '{}': no nodes", node.op_type, node.name);
    let tree = ids(node, "nodes_treeids", n)?;
    let id = ids(node, "nodes_nodeids", n)?;
    let feature = ids(node, "nodes_featureids", n)?;
    let true_id = ids(node, "nodes_truenodeids", n)?;
    let false_id = ids(node, "nodes_falsenodeids", n)?;
    let modes = exactly(
        node,
        "nodes_modes",
        node.get_attr_vec::<String>("nodes_modes")?,
        n,
    )?;
    let values = floats(node, "nodes_values")?.unwrap_or_else(|| vec![0.0; n]);
    let values = exactly(node, "nodes_values", values, n)?;
    let missing = ints(node, "nodes_missing_value_tracks_true")?;
    ensure!(
        missing.is_empty() || missing.len() == n,
        "nodes_missing_value_tracks_true has {} entries, expected {n}",
        missing.len()
    );
    (0..n)
        .map(|i| {
            Ok(NodeSpec {
                tree: tree[i],
                id: id[i],
                cmp: cmp_of(&modes[i])?,
                feature: feature[i],
                threshold: values[i],
                true_id: true_id[i],
                false_id: false_id[i],
                missing_true: missing.get(i).is_some_and(|&m| m != 0),
                members: vec![],
            })
        })
        .collect()
}

#[cfg(feature = "onnx")]
/// The leaf weights of an ai.onnx.ml 1–3 ensemble (`class_*` or `target_*`).
fn leaves_v3(node: &NodeProto, prefix: &str) -> TractResult<Vec<LeafWeight>> {
    let n = ints(node, &format!("{prefix}_ids"))?.len();
    let tree = ids(node, &format!("{prefix}_treeids"), n)?;
    let at = ids(node, &format!("{prefix}_nodeids"), n)?;
    let target = ids(node, &format!("{prefix}_ids"), n)?;
    let weights = floats(node, &format!("{prefix}_weights"))?.unwrap_or_default();
    let weights = exactly(node, &format!("{prefix}_weights"), weights, n)?;
    Ok((0..n)
        .map(|i| LeafWeight {
            tree: tree[i],
            node: at[i],
            target: target[i],
            weight: weights[i],
        })
        .collect())
}

#[cfg(feature = "onnx")]
fn forest(
    node: &NodeProto,
    nodes: &[NodeSpec],
    leaves: &[LeafWeight],
    targets: usize,
) -> TractResult<Arc<Forest>> {
    Forest::new(nodes, leaves, targets)
        .map(Arc::new)
        .map_err(|e| format_err!("{} '{}': {e}", node.op_type, node.name))
}

#[cfg(feature = "onnx")]
fn classifier(
    _: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let labels =
        Labels::of(node, "classlabels_int64s", "classlabels_strings")?.with_context(|| {
            format!(
                "TreeEnsembleClassifier '{}': no classlabels_int64s or classlabels_strings",
                node.name
            )
        })?;
    let classes = labels.len();
    ensure!(
        classes > 0,
        "TreeEnsembleClassifier '{}': no class labels",
        node.name
    );
    let leaves = leaves_v3(node, "class")?;
    let forest = forest(node, &nodes_v3(node)?, &leaves, classes)?;
    let mut named: Vec<usize> = leaves.iter().map(|l| l.target).collect();
    named.sort_unstable();
    named.dedup();
    let op = Trees {
        forest,
        aggregate: Aggregate::Sum,
        post: Post::of(node)?,
        base: floats(node, "base_values")?.unwrap_or_default(),
        classify: Some(Classify {
            binary_case: classes == 2 && named.len() == 1,
            all_positive: leaves.iter().all(|l| l.weight >= 0.0),
            labels,
        }),
    };
    Ok((
        expand(TreesExpansion {
            op,
            cast_to_input: false,
        }),
        vec![],
    ))
}

fn aggregate_of(text: &str) -> TractResult<Aggregate> {
    Ok(match text {
        "SUM" => Aggregate::Sum,
        "AVERAGE" => Aggregate::Average,
        "MIN" => Aggregate::Min,
        "MAX" => Aggregate::Max,
        other => bail!("aggregate_function '{other}' (expected SUM, AVERAGE, MIN or MAX)"),
    })
}

#[cfg(feature = "onnx")]
fn regressor(
    _: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let targets = node.get_attr_opt::<i64>("n_targets")?.unwrap_or(1);
    ensure!(
        targets > 0,
        "TreeEnsembleRegressor '{}': n_targets {targets}",
        node.name
    );
    let leaves = leaves_v3(node, "target")?;
    let op = Trees {
        forest: forest(node, &nodes_v3(node)?, &leaves, targets as usize)?,
        aggregate: aggregate_of(
            node.get_attr_opt::<&str>("aggregate_function")?
                .unwrap_or("SUM"),
        )?,
        post: Post::of(node)?,
        base: floats(node, "base_values")?.unwrap_or_default(),
        classify: None,
    };
    Ok((
        expand(TreesExpansion {
            op,
            cast_to_input: false,
        }),
        vec![],
    ))
}

#[cfg(feature = "onnx")]
/// ai.onnx.ml 5 `TreeEnsemble`: nodes are array positions, children are nodes or leaves (one
/// target and weight each), modes a uint8 tensor, `BRANCH_MEMBER` sets NaN-separated.
fn ensemble_v5(
    _: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let what = || format!("TreeEnsemble '{}'", node.name);
    let features = ints(node, "nodes_featureids")?;
    let n = features.len();
    let splits = tensor_floats(node.get_attr::<&TensorProto>("nodes_splits")?)?;
    let modes = tensor_bytes(node.get_attr::<&TensorProto>("nodes_modes")?)?;
    let (true_ids, false_ids) = (
        ints(node, "nodes_truenodeids")?,
        ints(node, "nodes_falsenodeids")?,
    );
    let (true_leaf, false_leaf) = (
        ints(node, "nodes_trueleafs")?,
        ints(node, "nodes_falseleafs")?,
    );
    let missing = ints(node, "nodes_missing_value_tracks_true")?;
    for (name, len) in [
        ("nodes_splits", splits.len()),
        ("nodes_modes", modes.len()),
        ("nodes_truenodeids", true_ids.len()),
        ("nodes_falsenodeids", false_ids.len()),
        ("nodes_trueleafs", true_leaf.len()),
        ("nodes_falseleafs", false_leaf.len()),
    ] {
        ensure!(
            len == n,
            "{}: {name} has {len} entries, expected {n}",
            what()
        );
    }
    let leaf_targets = ints(node, "leaf_targetids")?;
    let leaf_weights = tensor_floats(node.get_attr::<&TensorProto>("leaf_weights")?)?;
    ensure!(
        leaf_targets.len() == leaf_weights.len(),
        "{}: leaf_targetids and leaf_weights differ in length",
        what()
    );
    let mut members = match node.get_attr_opt::<&TensorProto>("membership_values")? {
        Some(t) => tensor_floats(t)?,
        None => vec![],
    }
    .into_iter();
    let roots = ints(node, "tree_roots")?;
    let targets = node.get_attr::<i64>("n_targets")?;
    ensure!(
        targets > 0 && !roots.is_empty(),
        "{}: n_targets {targets}, {} trees",
        what(),
        roots.len()
    );
    // each MEMBER node's set, in node order
    let mut sets: Vec<Vec<f32>> = Vec::with_capacity(n);
    for &m in &modes {
        let mut set = vec![];
        if m == 6 {
            for v in members.by_ref() {
                if v.is_nan() {
                    break;
                }
                set.push(v);
            }
        }
        sets.push(set);
    }
    let index = |v: i64, len: usize, what_: &str| -> TractResult<usize> {
        usize::try_from(v)
            .ok()
            .filter(|&i| i < len)
            .with_context(|| format!("{}: {what_} {v} out of range", what()))
    };
    // per tree, the nodes reachable from its root; node i keeps id i, leaf j takes id n + j
    let (mut nodes, mut leaves) = (Vec::new(), Vec::new());
    for (tree, &root) in roots.iter().enumerate() {
        let mut seen = std::collections::HashSet::new();
        let mut open = vec![index(root, n, "tree root")?];
        while let Some(i) = open.pop() {
            if !seen.insert(i) {
                continue;
            }
            let cmp = match modes[i] {
                0 => Cmp::Leq,
                1 => Cmp::Lt,
                2 => Cmp::Gte,
                3 => Cmp::Gt,
                4 => Cmp::Eq,
                5 => Cmp::Neq,
                6 => Cmp::Member,
                other => bail!("{}: node mode {other}", what()),
            };
            let mut child = |id: i64, leaf: bool| -> TractResult<usize> {
                if leaf {
                    let j = index(id, leaf_weights.len(), "leaf")?;
                    if !nodes
                        .iter()
                        .any(|s: &NodeSpec| s.tree == tree && s.id == n + j)
                    {
                        nodes.push(NodeSpec {
                            tree,
                            id: n + j,
                            cmp: None,
                            feature: 0,
                            threshold: 0.0,
                            true_id: 0,
                            false_id: 0,
                            missing_true: false,
                            members: vec![],
                        });
                        let target = index(leaf_targets[j], targets as usize, "leaf target")?;
                        leaves.push(LeafWeight {
                            tree,
                            node: n + j,
                            target,
                            weight: leaf_weights[j],
                        });
                    }
                    Ok(n + j)
                } else {
                    let c = index(id, n, "child node")?;
                    open.push(c);
                    Ok(c)
                }
            };
            let t = child(true_ids[i], true_leaf[i] != 0)?;
            let f = child(false_ids[i], false_leaf[i] != 0)?;
            nodes.push(NodeSpec {
                tree,
                id: i,
                cmp: Some(cmp),
                feature: index(features[i], usize::MAX, "feature")?,
                threshold: splits[i],
                true_id: t,
                false_id: f,
                missing_true: missing.get(i).is_some_and(|&m| m != 0),
                members: std::mem::take(&mut sets[i]),
            });
        }
    }
    let aggregate = match node.get_attr_opt::<i64>("aggregate_function")?.unwrap_or(1) {
        0 => Aggregate::Average,
        1 => Aggregate::Sum,
        2 => Aggregate::Min,
        3 => Aggregate::Max,
        other => bail!("{}: aggregate_function {other}", what()),
    };
    let post = match node.get_attr_opt::<i64>("post_transform")?.unwrap_or(0) {
        0 => Post::None,
        1 => Post::Softmax,
        2 => Post::Logistic,
        3 => Post::SoftmaxZero,
        4 => Post::Probit,
        other => bail!("{}: post_transform {other}", what()),
    };
    let op = Trees {
        forest: forest(node, &nodes, &leaves, targets as usize)?,
        aggregate,
        post,
        base: vec![],
        classify: None,
    };
    Ok((
        expand(TreesExpansion {
            op,
            cast_to_input: true,
        }),
        vec![],
    ))
}

/// A classifier's labels and the flags that decide its binary layouts.
#[derive(Debug, Clone, PartialEq)]
struct Classify {
    labels: Labels,
    /// Two classes, and every leaf weight names the same one.
    binary_case: bool,
    all_positive: bool,
}

/// The ensemble op: input `[N, F]` (or `[F]`); a regressor's output `[N, targets]` f32, a
/// classifier's the label `[N]` i64 and the scores `[N, classes]` f32.
#[derive(Debug, Clone, PartialEq)]
pub struct Trees {
    forest: Arc<Forest>,
    aggregate: Aggregate,
    post: Post,
    base: Vec<f32>,
    classify: Option<Classify>,
}

impl Trees {
    /// One row's regression scores from the aggregated `scores` and `seen`.
    fn finish_regression(&self, scores: &mut [f32], seen: &[bool]) {
        let t = scores.len();
        let summed = matches!(self.aggregate, Aggregate::Sum | Aggregate::Average);
        if t == 1 {
            let origin = if self.base.len() == 1 {
                self.base[0]
            } else {
                0.0
            };
            let s = if summed || seen[0] {
                scores[0] + origin
            } else {
                origin
            };
            scores[0] = if self.post == Post::Probit {
                super::probit(s)
            } else {
                s
            };
            return;
        }
        let use_base = self.base.len() == t;
        for j in 0..t {
            let base = if use_base { self.base[j] } else { 0.0 };
            scores[j] = base + if summed || seen[j] { scores[j] } else { 0.0 };
        }
        self.post.apply(scores);
    }

    /// One row's classification: its label and its scores (`out`, one per class) from the
    /// summed `scores` and `seen`.
    fn finish_classification(
        &self,
        c: &Classify,
        scores: &[f32],
        seen: &[bool],
        out: &mut [f32],
    ) -> i64 {
        let n = scores.len();
        let base = &self.base;
        // (the row's scores, how many of them are written, the second-class rule)
        let mut row: Vec<f32> = scores.to_vec();
        let mut has: Vec<bool> = seen.to_vec();
        let mut second = -1;
        let label;
        if n > 2 {
            for k in 0..base.len().min(n) {
                row[k] = if has[k] { row[k] + base[k] } else { base[k] };
                has[k] = true;
            }
            let mut best: Option<usize> = None;
            for k in 0..n {
                if has[k] && best.is_none_or(|b| row[k] > row[b]) {
                    best = Some(k);
                }
            }
            label = c.labels.value(best.unwrap_or(0));
        } else {
            if n == 2 && base.len() == 2 {
                if has[1] {
                    row[1] = base[1] + row[0];
                    row[0] = -row[1];
                } else {
                    row[1] += base[1];
                    row[0] += base[0];
                }
            } else if n == 2 && base.len() == 1 {
                row[0] += base[0];
                if !has[1] {
                    row.pop();
                }
            } else if n == 2 && base.is_empty() {
                second = 3;
                if !has[1] {
                    row.pop();
                }
            } else if n == 1 {
                // one class: ONNX Runtime's single-score path
                row = vec![scores[0] + if base.len() == 1 { base[0] } else { 0.0 }];
                has = vec![true];
                if base.len() == 2 {
                    let s = scores[0] + base[1];
                    row = vec![-s, s];
                    has = vec![true, true];
                }
            }
            let (s0, h0) = (row[0], has[0]);
            let (s1, h1) = if row.len() == 2 && has.get(1) == Some(&true) {
                (row[1], true)
            } else {
                (0.0, false)
            };
            let positive = if h1 {
                s1
            } else if h0 {
                s0
            } else {
                0.0
            };
            label = if c.binary_case {
                let (threshold, if_pos, if_neg) = if c.all_positive {
                    (0.5, 0, 1)
                } else {
                    (0.0, 2, 3)
                };
                let winner = if positive > threshold {
                    second = if_pos;
                    1
                } else {
                    second = if_neg;
                    0
                };
                c.labels.value(winner)
            } else {
                // ONNX Runtime's literal positive and negative labels (1 and 0), not the
                // classes' labels, when both classes have weights
                i64::from(positive > 0.0)
            };
        }
        write_scores(&mut row, self.post, second);
        let k = row.len().min(out.len());
        out[..k].copy_from_slice(&row[..k]);
        out[k..].fill(0.0);
        label
    }
}

/// ONNX Runtime's `write_scores`: the post-transform on two or more scores; one score becomes
/// two by the binary rule `second` (`0`/`1`: `[1 − s, s]`; `2`/`3`: `[σ(−s), σ(s)]` with
/// `LOGISTIC`, else `[−s, s]` / `[s, −s]`), or stays one (`PROBIT`, or no rule).
fn write_scores(row: &mut Vec<f32>, post: Post, second: i32) {
    if row.len() >= 2 {
        post.apply(row);
        return;
    }
    let Some(&s) = row.first() else { return };
    if post == Post::Probit {
        row[0] = super::probit(s);
        return;
    }
    *row = match (second, post) {
        (0 | 1, _) => vec![1.0 - s, s],
        (2 | 3, Post::Logistic) => vec![super::logistic(-s), super::logistic(s)],
        (2, _) => vec![-s, s],
        (3, _) => vec![s, -s],
        _ => vec![s],
    };
}

impl Op for Trees {
    fn name(&self) -> StaticName {
        "EdgeTreeEnsemble".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} trees, {} features, {} targets, {:?}, {:?}",
            self.forest.trees(),
            self.forest.features(),
            self.forest.targets(),
            self.aggregate,
            self.post
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for Trees {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let (x, rows, stride) = rows_f32(&input)?;
        let f = &self.forest;
        ensure!(
            stride >= f.features(),
            "tree ensemble reads feature {} of rows that have {stride}",
            f.features() - 1
        );
        let t = f.targets();
        let (mut scores, mut seen) = (vec![0f32; rows * t], vec![false; rows * t]);
        f.evaluate(&x, rows, stride, self.aggregate, &mut scores, &mut seen);
        match &self.classify {
            None => {
                for (s, h) in scores.chunks_exact_mut(t).zip(seen.chunks_exact(t)) {
                    self.finish_regression(s, h);
                }
                Ok(tvec!(Tensor::from_shape(&[rows, t], &scores)?.into_tvalue()))
            }
            Some(c) => {
                let mut out = vec![0f32; rows * t];
                let mut labels = Vec::with_capacity(rows);
                for ((s, h), o) in scores
                    .chunks_exact(t)
                    .zip(seen.chunks_exact(t))
                    .zip(out.chunks_exact_mut(t))
                {
                    labels.push(self.finish_classification(c, s, h, o));
                }
                Ok(tvec!(
                    Tensor::from_shape(&[rows], &labels)?.into_tvalue(),
                    Tensor::from_shape(&[rows, t], &out)?.into_tvalue()
                ))
            }
        }
    }
}

impl TypedOp for Trees {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let n: TDim = if inputs[0].rank() == 2 {
            inputs[0].shape[0].clone()
        } else {
            1.into()
        };
        let t = self.forest.targets();
        let scores = f32::fact([n.clone(), t.into()]);
        Ok(match self.classify {
            None => tvec!(scores),
            Some(_) => tvec!(i64::fact([n]), scores),
        })
    }

    as_op!();
}

#[cfg(feature = "onnx")]
/// The parser's view of the op: its outputs' types and ranks, then the typed op (and, for
/// `TreeEnsemble`, a cast back to the input's float type).
#[derive(Debug, Clone)]
struct TreesExpansion {
    op: Trees,
    cast_to_input: bool,
}

#[cfg(feature = "onnx")]
impl Expansion for TreesExpansion {
    fn name(&self) -> StaticName {
        "TreeEnsemble".into()
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(if self.op.classify.is_some() { 2 } else { 1 })
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, self.nboutputs()?)?;
        let scores = &outputs[outputs.len() - 1];
        if self.cast_to_input {
            s.equals(&scores.datum_type, &inputs[0].datum_type)?;
        } else {
            s.equals(&scores.datum_type, f32::datum_type())?;
        }
        s.equals(&scores.rank, 2)?;
        s.equals(&scores.shape[1], self.op.forest.targets().to_dim())?;
        s.given(&inputs[0].rank, move |s, rank| {
            if rank == 2 {
                s.equals(&scores.shape[0], &inputs[0].shape[0])?;
            } else {
                s.equals(&scores.shape[0], 1.to_dim())?;
            }
            Ok(())
        })?;
        if self.op.classify.is_some() {
            s.equals(&outputs[0].datum_type, i64::datum_type())?;
            s.equals(&outputs[0].rank, 1)?;
            s.equals(&outputs[0].shape[0], &scores.shape[0])?;
        }
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let mut outs = model.wire_node(prefix, self.op.clone(), inputs)?;
        let dt = model.outlet_fact(inputs[0])?.datum_type;
        if self.cast_to_input && dt != f32::datum_type() && dt.is_float() {
            let last = outs.len() - 1;
            outs[last] = model.wire_node(
                format!("{prefix}.cast"),
                tract_nnef::tract_core::ops::cast::cast(dt),
                &[outs[last]],
            )?[0];
        }
        Ok(outs)
    }
}

// f32 parameters: see `rows`' module doc on `Eq`
impl Eq for Trees {}
impl Eq for Classify {}

/// The NNEF form of [`Trees`] (`edgefleet_tree_ensemble`): the forest as its description
/// ([`Forest::describe`]) in tensors — `nodes` `[n, 7]` i64 (tree, id, comparison or -1 for a
/// leaf, feature, true id, false id, NaN goes true), `thresholds`, the member sets (`members`,
/// `member_counts`), `leaves` `[m, 3]` i64 (tree, node, target) and `weights` — and the rest as
/// attributes; read back through [`Forest::new`], which checks it as it checks a parsed model.
pub(crate) fn register_nnef(reg: &mut tract_nnef::internal::Registry) {
    use tract_nnef::internal::*;
    use tract_nnef::ser::{array, invocation, logical, numeric, string};
    const CMPS: [Cmp; 7] = Cmp::ALL;
    reg.register_dumper(|ast, node, op: &Trees| {
        let (nodes, leaves) = op.forest.describe();
        let mut table = Vec::with_capacity(nodes.len() * 7);
        let (mut members, mut counts) = (Vec::new(), Vec::with_capacity(nodes.len()));
        for n in &nodes {
            let cmp = n.cmp.map_or(-1, |c| {
                CMPS.iter().position(|&k| k == c).unwrap_or(0) as i64
            });
            table.extend([
                n.tree as i64,
                n.id as i64,
                cmp,
                n.feature as i64,
                n.true_id as i64,
                n.false_id as i64,
                n.missing_true as i64,
            ]);
            counts.push(n.members.len() as i64);
            members.extend_from_slice(&n.members);
        }
        let leaf_table: Vec<i64> = leaves
            .iter()
            .flat_map(|l| [l.tree as i64, l.node as i64, l.target as i64])
            .collect();
        let weights: Vec<f32> = leaves.iter().map(|l| l.weight).collect();
        let name = &node.name;
        let mut konst = |suffix: &str, t: Tensor| {
            ast.konst_variable(format!("{name}.{suffix}"), &t.into_arc_tensor())
        };
        let nodes_t = konst("nodes", Tensor::from_shape(&[nodes.len(), 7], &table)?)?;
        let thresholds: Vec<f32> = nodes.iter().map(|n| n.threshold).collect();
        let thresholds = konst("thresholds", tensor1(&thresholds))?;
        let members = konst("members", tensor1(&members))?;
        let counts = konst("member_counts", tensor1(&counts))?;
        let leaves_t = konst(
            "leaves",
            Tensor::from_shape(&[leaves.len(), 3], &leaf_table)?,
        )?;
        let weights = konst("weights", tensor1(&weights))?;
        let base = konst("base", tensor1(&op.base))?;
        let (labels, label_names, binary_case, all_positive) = match &op.classify {
            None => (vec![], vec![], false, false),
            Some(c) => match &c.labels {
                Labels::Ints(v) => (v.clone(), vec![], c.binary_case, c.all_positive),
                Labels::Strings(v) => (vec![], v.clone(), c.binary_case, c.all_positive),
            },
        };
        let labels = konst("labels", tensor1(&labels))?;
        let input = ast.mapping[&node.inputs[0]].clone();
        Ok(Some(invocation(
            "edgefleet_tree_ensemble",
            &[
                input, nodes_t, thresholds, members, counts, leaves_t, weights, base, labels,
            ],
            &[
                ("targets", numeric(op.forest.targets())),
                ("aggregate", string(aggregate_name(op.aggregate))),
                ("post", string(op.post.name())),
                ("classifier", logical(op.classify.is_some())),
                (
                    "label_names",
                    array(label_names.iter().map(string).collect::<Vec<_>>()),
                ),
                ("binary_case", logical(binary_case)),
                ("all_positive", logical(all_positive)),
            ],
        )))
    });
    let tensor = |name: &str| TypeName::Scalar.tensor().named(name);
    reg.register_primitive(
        "edgefleet_tree_ensemble",
        &[
            tensor("input"),
            TypeName::Integer.tensor().named("nodes"),
            tensor("thresholds"),
            tensor("members"),
            TypeName::Integer.tensor().named("member_counts"),
            TypeName::Integer.tensor().named("leaves"),
            tensor("weights"),
            tensor("base"),
            TypeName::Integer.tensor().named("labels"),
            TypeName::Integer.named("targets"),
            TypeName::String.named("aggregate"),
            TypeName::String.named("post"),
            TypeName::Logical.named("classifier"),
            TypeName::String.array().named("label_names"),
            TypeName::Logical.named("binary_case"),
            TypeName::Logical.named("all_positive"),
        ],
        &[("output", TypeName::Scalar.tensor())],
        |builder, call| {
            fn values<T: Datum + Copy>(t: &Arc<Tensor>) -> TractResult<Vec<T>> {
                Ok(t.try_as_plain_ram()?.as_slice::<T>()?.to_vec())
            }
            let get = |builder: &mut ModelBuilder, name: &str| -> TractResult<Arc<Tensor>> {
                call.named_arg_as(builder, name)
            };
            let input = call.named_arg_as(builder, "input")?;
            let table = values::<i64>(&get(builder, "nodes")?)?;
            let thresholds = values::<f32>(&get(builder, "thresholds")?)?;
            let members = values::<f32>(&get(builder, "members")?)?;
            let counts = values::<i64>(&get(builder, "member_counts")?)?;
            let leaf_table = values::<i64>(&get(builder, "leaves")?)?;
            let weights = values::<f32>(&get(builder, "weights")?)?;
            let n = thresholds.len();
            ensure!(
                table.len() == n * 7 && counts.len() == n,
                "tree ensemble: {} node entries for {n} thresholds",
                table.len()
            );
            ensure!(
                leaf_table.len() == weights.len() * 3,
                "tree ensemble: {} leaf entries for {} weights",
                leaf_table.len(),
                weights.len()
            );
            let id = |v: i64| usize::try_from(v).map_err(|_| format_err!("tree ensemble: {v}"));
            let mut nodes = Vec::with_capacity(n);
            let mut from = 0usize;
            for (k, row) in table.chunks_exact(7).enumerate() {
                let count = id(counts[k])?;
                ensure!(
                    from + count <= members.len(),
                    "tree ensemble: member sets overrun"
                );
                let cmp = match row[2] {
                    -1 => None,
                    c => Some(*CMPS.get(id(c)?).context("tree ensemble: comparison")?),
                };
                nodes.push(NodeSpec {
                    tree: id(row[0])?,
                    id: id(row[1])?,
                    cmp,
                    feature: id(row[3])?,
                    threshold: thresholds[k],
                    true_id: id(row[4])?,
                    false_id: id(row[5])?,
                    missing_true: row[6] != 0,
                    members: members[from..from + count].to_vec(),
                });
                from += count;
            }
            let leaves = leaf_table
                .chunks_exact(3)
                .zip(&weights)
                .map(|(l, &weight)| {
                    Ok(LeafWeight {
                        tree: id(l[0])?,
                        node: id(l[1])?,
                        target: id(l[2])?,
                        weight,
                    })
                })
                .collect::<TractResult<Vec<_>>>()?;
            let targets: usize = call.named_arg_as(builder, "targets")?;
            let forest = Forest::new(&nodes, &leaves, targets)
                .map_err(|e| format_err!("tree ensemble: {e}"))?;
            let aggregate: String = call.named_arg_as(builder, "aggregate")?;
            let post: String = call.named_arg_as(builder, "post")?;
            let classify = if call.named_arg_as::<bool>(builder, "classifier")? {
                let ints = values::<i64>(&get(builder, "labels")?)?;
                let names: TVec<String> = call.named_arg_as(builder, "label_names")?;
                Some(Classify {
                    labels: if names.is_empty() {
                        Labels::Ints(ints)
                    } else {
                        Labels::Strings(names.into_iter().collect())
                    },
                    binary_case: call.named_arg_as(builder, "binary_case")?,
                    all_positive: call.named_arg_as(builder, "all_positive")?,
                })
            } else {
                None
            };
            let op = Trees {
                forest: Arc::new(forest),
                aggregate: aggregate_of(&aggregate)?,
                post: Post::parse(&post)?,
                base: values::<f32>(&get(builder, "base")?)?,
                classify,
            };
            builder.wire(op, &[input])
        },
    );
}

/// [`aggregate_of`]'s inverse.
fn aggregate_name(a: Aggregate) -> &'static str {
    match a {
        Aggregate::Sum => "SUM",
        Aggregate::Average => "AVERAGE",
        Aggregate::Min => "MIN",
        Aggregate::Max => "MAX",
    }
}
