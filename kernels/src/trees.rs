//! Decision-tree ensembles (gradient-boosted trees and random forests, as scikit-learn,
//! LightGBM and XGBoost export them to ONNX `TreeEnsemble*`) over rows of features.
//!
//! A forest is flattened into one array of 16-byte nodes (feature, threshold, true and false
//! child); a leaf is a node whose two children are itself, so a walk can take a fixed number of
//! steps (the tree's depth) with no test for "reached a leaf". The walks are interleaved: a
//! block of 16 independent (row, tree) walks advances one level at a time, so the CPU overlaps
//! 16 chains of dependent loads instead of waiting on one (a row against 16 trees at batch 1; 16
//! rows through one tree at a time for a batch). Where every branch node compares the same way
//! (what the exporters write: `BRANCH_LEQ` for scikit-learn and LightGBM, `BRANCH_LT` for
//! XGBoost) the walk is compiled for that comparison; mixed forests and set membership take the
//! per-node path. A leaf adds its `(target, weight)` pairs to its row's scores, in tree order
//! (the order ONNX Runtime adds them in, one thread).

use std::collections::HashMap;

/// How a branch node sends a feature value `x` to its true child, against its threshold `t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cmp {
    /// `x <= t`.
    Leq,
    /// `x < t`.
    Lt,
    /// `x >= t`.
    Gte,
    /// `x > t`.
    Gt,
    /// `x == t`.
    Eq,
    /// `x != t`.
    Neq,
    /// `x` is one of the node's set of values ([`NodeSpec::members`]).
    Member,
}

impl Cmp {
    /// Every comparison, in declaration order (a serialized forest numbers them so).
    pub const ALL: [Cmp; 7] = [
        Cmp::Leq,
        Cmp::Lt,
        Cmp::Gte,
        Cmp::Gt,
        Cmp::Eq,
        Cmp::Neq,
        Cmp::Member,
    ];
}

/// One node as an exporter describes it (ONNX's per-node attribute arrays).
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSpec {
    /// Its tree.
    pub tree: usize,
    /// Its id within the tree.
    pub id: usize,
    /// `None` for a leaf.
    pub cmp: Option<Cmp>,
    /// The feature it reads.
    pub feature: usize,
    /// Its threshold.
    pub threshold: f32,
    /// Where `x` goes when the comparison holds (a node id in the same tree).
    pub true_id: usize,
    /// Where it goes otherwise.
    pub false_id: usize,
    /// A NaN feature value goes to the true child (else it takes the comparison's answer,
    /// false for every comparison but `Neq`).
    pub missing_true: bool,
    /// The values of a [`Cmp::Member`] node.
    pub members: Vec<f32>,
}

/// One leaf weight: the leaf (tree, node id) adds `weight` to target `target`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LeafWeight {
    /// The leaf's tree.
    pub tree: usize,
    /// The leaf's node id.
    pub node: usize,
    /// The target (class or output) it adds to.
    pub target: usize,
    /// What it adds.
    pub weight: f32,
}

/// A node in the walk's layout.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
struct Node {
    /// The feature read, with [`NAN_TRUE`] set when a NaN value goes to the true child.
    feature: u32,
    threshold: f32,
    /// `[false, true]`; a leaf's are itself.
    child: [u32; 2],
}

/// How leaf weights combine across trees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Aggregate {
    /// Summed.
    Sum,
    /// Summed, then divided by the number of trees.
    Average,
    /// The smallest.
    Min,
    /// The largest.
    Max,
}

/// Why a forest's description does not make a forest.
#[derive(Debug, Clone, PartialEq)]
pub struct ForestError(pub String);

impl std::fmt::Display for ForestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ForestError {}

/// A flattened forest, ready to walk.
#[derive(Clone, Debug, PartialEq)]
pub struct Forest {
    nodes: Vec<Node>,
    /// Per tree: its root and its depth (steps from the root to its deepest leaf).
    trees: Vec<(u32, u32)>,
    /// Per node: where its leaf weights start in `pairs` (`nodes.len() + 1` entries).
    pair_start: Vec<u32>,
    pairs: Vec<(u32, f32)>,
    /// The comparison of every branch node, when they all compare the same way.
    uniform: Option<Cmp>,
    /// Per node, when not uniform (or with NaN routing): its comparison and whether NaN goes
    /// true.
    modes: Vec<(Option<Cmp>, bool)>,
    /// Some node sends NaN to its true child.
    missing_true: bool,
    /// Per node: the member set of a `Member` node.
    members: HashMap<u32, Vec<f32>>,
    targets: usize,
    features: usize,
}

/// Walks interleaved at once.
const LANES: usize = 16;

/// The bit of [`Node::feature`] that sends a NaN value to the true child.
const NAN_TRUE: u32 = 1 << 31;

/// Levels walked between checks that every lane has reached its leaf (trees from LightGBM grow
/// leaf-wise: their deepest leaf is often twice as deep as most walks go).
const CHECK_EVERY: u32 = 4;

impl Forest {
    /// The forest of `nodes` and `leaves` (ONNX's node and leaf attribute arrays, any order)
    /// with `targets` outputs per row; checks that every child is a node of its tree, that no
    /// tree loops, that every target is below `targets`.
    pub fn new(
        nodes: &[NodeSpec],
        leaves: &[LeafWeight],
        targets: usize,
    ) -> Result<Forest, ForestError> {
        let err = |m: String| Err(ForestError(m));
        if nodes.is_empty() {
            return err("a tree ensemble without nodes".into());
        }
        let mut order: Vec<usize> = (0..nodes.len()).collect();
        order.sort_by_key(|&i| (nodes[i].tree, nodes[i].id));
        let mut index: HashMap<(usize, usize), u32> = HashMap::new();
        for (at, &i) in order.iter().enumerate() {
            let n = &nodes[i];
            if index.insert((n.tree, n.id), at as u32).is_some() {
                return err(format!("tree {} has two nodes with id {}", n.tree, n.id));
            }
        }
        let mut flat = Vec::with_capacity(nodes.len());
        let mut modes = Vec::with_capacity(nodes.len());
        let mut members = HashMap::new();
        let mut features = 0usize;
        for (at, &i) in order.iter().enumerate() {
            let n = &nodes[i];
            let at = at as u32;
            let node = match n.cmp {
                None => Node {
                    feature: 0,
                    threshold: 0.0,
                    child: [at, at],
                },
                Some(cmp) => {
                    let child = |id: usize, which: &str| match index.get(&(n.tree, id)) {
                        Some(&c) => Ok(c),
                        None => Err(ForestError(format!(
                            "node {} of tree {}: its {which} child {id} is not a node of the tree",
                            n.id, n.tree
                        ))),
                    };
                    let (t, f) = (child(n.true_id, "true")?, child(n.false_id, "false")?);
                    if n.feature > u32::MAX as usize / 2 {
                        return err(format!(
                            "node {} of tree {}: feature {}",
                            n.id, n.tree, n.feature
                        ));
                    }
                    features = features.max(n.feature + 1);
                    if cmp == Cmp::Member {
                        members.insert(at, n.members.clone());
                    }
                    Node {
                        feature: n.feature as u32 | if n.missing_true { NAN_TRUE } else { 0 },
                        threshold: n.threshold,
                        child: [f, t],
                    }
                }
            };
            flat.push(node);
            modes.push((n.cmp, n.missing_true && n.cmp.is_some()));
        }
        // leaf weights, per node
        let mut per_node: Vec<Vec<(u32, f32)>> = vec![Vec::new(); flat.len()];
        for l in leaves {
            let Some(&at) = index.get(&(l.tree, l.node)) else {
                return err(format!(
                    "a leaf weight for node {} of tree {}, which does not exist",
                    l.node, l.tree
                ));
            };
            if l.target >= targets {
                return err(format!(
                    "a leaf weight for target {} of {targets}",
                    l.target
                ));
            }
            if modes[at as usize].0.is_some() {
                return err(format!(
                    "a leaf weight for node {} of tree {}, which is a branch",
                    l.node, l.tree
                ));
            }
            per_node[at as usize].push((l.target as u32, l.weight));
        }
        let mut pair_start = Vec::with_capacity(flat.len() + 1);
        let mut pairs = Vec::new();
        for p in per_node {
            pair_start.push(pairs.len() as u32);
            pairs.extend(p);
        }
        pair_start.push(pairs.len() as u32);
        // trees: the root is the node no other node of the tree points to
        let mut trees = Vec::new();
        let mut first = 0;
        while first < order.len() {
            let tree = nodes[order[first]].tree;
            let mut end = first;
            while end < order.len() && nodes[order[end]].tree == tree {
                end += 1;
            }
            let mut pointed = vec![false; end - first];
            for k in first..end {
                if modes[k].0.is_none() {
                    continue;
                }
                for &c in &flat[k].child {
                    if c as usize == k {
                        return err(format!(
                            "tree {tree}: node {} leads to itself",
                            nodes[order[k]].id
                        ));
                    }
                    pointed[c as usize - first] = true;
                }
            }
            let roots: Vec<usize> = (0..pointed.len()).filter(|&k| !pointed[k]).collect();
            let [root] = roots[..] else {
                return err(format!(
                    "tree {tree} has {} roots (nodes no other node leads to)",
                    roots.len()
                ));
            };
            let root = (first + root) as u32;
            let depth = depth(&flat, root, first..end).ok_or_else(|| {
                ForestError(format!(
                    "tree {tree} is not a tree: a walk from its root loops"
                ))
            })?;
            trees.push((root, depth));
            first = end;
        }
        let branch_modes: Vec<Cmp> = modes.iter().filter_map(|m| m.0).collect();
        let uniform = branch_modes
            .first()
            .copied()
            .filter(|&c| c != Cmp::Member && branch_modes.iter().all(|&m| m == c));
        let missing_true = modes.iter().any(|m| m.1);
        Ok(Forest {
            nodes: flat,
            trees,
            pair_start,
            pairs,
            uniform,
            modes,
            missing_true,
            members,
            targets,
            features,
        })
    }

    /// Trees.
    pub fn trees(&self) -> usize {
        self.trees.len()
    }

    /// The forest as node and leaf descriptions [`Forest::new`] makes the same forest from (a
    /// serialized model's form): trees numbered in order, node ids their positions. Nodes no
    /// walk reaches (a tree's unreachable cycle) are left out.
    pub fn describe(&self) -> (Vec<NodeSpec>, Vec<LeafWeight>) {
        let mut tree_of = vec![usize::MAX; self.nodes.len()];
        for (t, &(root, _)) in self.trees.iter().enumerate() {
            let mut stack = vec![root];
            while let Some(at) = stack.pop() {
                let at = at as usize;
                if tree_of[at] != usize::MAX {
                    continue;
                }
                tree_of[at] = t;
                if self.modes[at].0.is_some() {
                    stack.extend(self.nodes[at].child);
                }
            }
        }
        let (mut nodes, mut leaves) = (Vec::new(), Vec::new());
        for (at, node) in self.nodes.iter().enumerate() {
            let tree = tree_of[at];
            if tree == usize::MAX {
                continue;
            }
            let (cmp, missing_true) = self.modes[at];
            nodes.push(NodeSpec {
                tree,
                id: at,
                cmp,
                feature: (node.feature & !NAN_TRUE) as usize,
                threshold: node.threshold,
                true_id: node.child[1] as usize,
                false_id: node.child[0] as usize,
                missing_true,
                members: self.members.get(&(at as u32)).cloned().unwrap_or_default(),
            });
            let (from, to) = (
                self.pair_start[at] as usize,
                self.pair_start[at + 1] as usize,
            );
            for &(target, weight) in &self.pairs[from..to] {
                leaves.push(LeafWeight {
                    tree,
                    node: at,
                    target: target as usize,
                    weight,
                });
            }
        }
        (nodes, leaves)
    }

    /// Outputs per row.
    pub fn targets(&self) -> usize {
        self.targets
    }

    /// Features a row must have (the largest feature read, plus one).
    pub fn features(&self) -> usize {
        self.features
    }

    /// Walks every tree for `rows` rows of `x` (row `r` at `x[r·stride..][..stride]`,
    /// `stride ≥ features()`) and combines the leaves' weights into `scores` (`[rows,
    /// targets()]`, overwritten) by `aggregate` (an average is the sum divided by the trees);
    /// `seen[r·targets + t]` says whether any leaf weight reached target `t` of row `r`.
    pub fn evaluate(
        &self,
        x: &[f32],
        rows: usize,
        stride: usize,
        aggregate: Aggregate,
        scores: &mut [f32],
        seen: &mut [bool],
    ) {
        assert!(
            stride >= self.features && x.len() >= rows.saturating_sub(1) * stride + self.features
        );
        assert!(scores.len() == rows * self.targets && seen.len() == scores.len());
        scores.fill(0.0);
        seen.fill(false);
        if rows == 0 {
            return;
        }
        let mut add = |row: usize, leaf: u32| {
            let (a, b) = (
                self.pair_start[leaf as usize] as usize,
                self.pair_start[leaf as usize + 1] as usize,
            );
            for &(t, w) in &self.pairs[a..b] {
                let k = row * self.targets + t as usize;
                let s = &mut scores[k];
                *s = match aggregate {
                    Aggregate::Sum | Aggregate::Average => *s + w,
                    Aggregate::Min if seen[k] => s.min(w),
                    Aggregate::Max if seen[k] => s.max(w),
                    Aggregate::Min | Aggregate::Max => w,
                };
                seen[k] = true;
            }
        };
        // (row, tree) walks, tree-major: a row's trees are added in tree order
        let walks = rows * self.trees.len();
        let mut start = 0;
        while start < walks {
            let len = LANES.min(walks - start);
            let mut idx = [0u32; LANES];
            let mut base = [0usize; LANES];
            let mut steps = 0;
            for l in 0..len {
                let (tree, row) = ((start + l) / rows, (start + l) % rows);
                let (root, depth) = self.trees[tree];
                idx[l] = root;
                base[l] = row * stride;
                steps = steps.max(depth);
            }
            self.walk(x, &mut idx[..len], &base[..len], steps);
            for (l, &leaf) in idx[..len].iter().enumerate() {
                add((start + l) % rows, leaf);
            }
            start += len;
        }
        if aggregate == Aggregate::Average {
            let n = self.trees.len() as f32;
            scores.iter_mut().for_each(|s| *s /= n);
        }
    }

    /// `steps` levels of every lane's walk (`idx` in, leaves out).
    fn walk(&self, x: &[f32], idx: &mut [u32], base: &[usize], steps: u32) {
        let n = &self.nodes;
        match (self.uniform, self.missing_true) {
            (Some(Cmp::Leq), false) => walk_with::<false>(n, x, idx, base, steps, |v, t| v <= t),
            (Some(Cmp::Lt), false) => walk_with::<false>(n, x, idx, base, steps, |v, t| v < t),
            (Some(Cmp::Gte), false) => walk_with::<false>(n, x, idx, base, steps, |v, t| v >= t),
            (Some(Cmp::Gt), false) => walk_with::<false>(n, x, idx, base, steps, |v, t| v > t),
            (Some(Cmp::Leq), true) => walk_with::<true>(n, x, idx, base, steps, |v, t| v <= t),
            (Some(Cmp::Lt), true) => walk_with::<true>(n, x, idx, base, steps, |v, t| v < t),
            (Some(Cmp::Gte), true) => walk_with::<true>(n, x, idx, base, steps, |v, t| v >= t),
            (Some(Cmp::Gt), true) => walk_with::<true>(n, x, idx, base, steps, |v, t| v > t),
            _ => {
                for _ in 0..steps {
                    for (i, &b) in idx.iter_mut().zip(base) {
                        let n = &self.nodes[*i as usize];
                        let v = x[b + (n.feature & !NAN_TRUE) as usize];
                        *i = n.child[self.go(*i, v, n.threshold) as usize];
                    }
                }
            }
        }
    }

    /// Whether node `at` sends `v` to its true child (any comparison, NaN routing).
    fn go(&self, at: u32, v: f32, t: f32) -> bool {
        let (cmp, missing_true) = self.modes[at as usize];
        let holds = match cmp {
            None => false,
            Some(Cmp::Leq) => v <= t,
            Some(Cmp::Lt) => v < t,
            Some(Cmp::Gte) => v >= t,
            Some(Cmp::Gt) => v > t,
            Some(Cmp::Eq) => v == t,
            Some(Cmp::Neq) => v != t,
            Some(Cmp::Member) => self.members.get(&at).is_some_and(|m| m.contains(&v)),
        };
        holds || (missing_true && v.is_nan())
    }
}

/// Up to `steps` levels of the lanes' walks with one comparison for every branch node (a
/// leaf's children are itself, so it stays), stopping early once every lane is at its leaf.
/// `NAN`: a NaN value goes true where its node has [`NAN_TRUE`].
#[inline(always)]
fn walk_with<const NAN: bool>(
    nodes: &[Node],
    x: &[f32],
    idx: &mut [u32],
    base: &[usize],
    steps: u32,
    go: impl Fn(f32, f32) -> bool,
) {
    let mut left = steps;
    while left > 0 {
        let chunk = left.min(CHECK_EVERY);
        for _ in 0..chunk {
            for (i, &b) in idx.iter_mut().zip(base) {
                let n = &nodes[*i as usize];
                let v = x[b + (n.feature & !NAN_TRUE) as usize];
                let mut true_side = go(v, n.threshold);
                if NAN {
                    true_side |= (n.feature & NAN_TRUE != 0) & v.is_nan();
                }
                *i = n.child[true_side as usize];
            }
        }
        left -= chunk;
        if left > 0 && idx.iter().all(|&i| nodes[i as usize].child[0] == i) {
            return;
        }
    }
}

/// The depth of the tree at `root` whose nodes are `range` (the longest walk from the root to
/// a leaf), or `None` when a walk loops.
fn depth(nodes: &[Node], root: u32, range: std::ops::Range<usize>) -> Option<u32> {
    // depth-first, each node once: 0 not seen, 1 on the current path, 2 done
    let mut state = vec![0u8; range.len()];
    let mut memo = vec![0u32; range.len()];
    let k = |at: u32| at as usize - range.start;
    let mut stack = vec![(root, false)];
    while let Some((at, children_done)) = stack.pop() {
        let n = &nodes[at as usize];
        let leaf = n.child == [at, at];
        if children_done {
            memo[k(at)] = if leaf {
                0
            } else {
                1 + n.child.iter().map(|&c| memo[k(c)]).max().unwrap_or(0)
            };
            state[k(at)] = 2;
            continue;
        }
        if state[k(at)] == 2 {
            continue;
        }
        state[k(at)] = 1;
        stack.push((at, true));
        if !leaf {
            for &c in &n.child {
                match state[k(c)] {
                    1 => return None,
                    0 => stack.push((c, false)),
                    _ => {}
                }
            }
        }
    }
    Some(memo[k(root)])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn value(&mut self) -> f32 {
            (self.below(2001) as f32 - 1000.0) / 250.0
        }
    }

    /// A random forest: `trees` trees of up to `depth` levels over `features` features, node ids
    /// shuffled (exporters number them in any order), every comparison in `cmps`.
    fn random_forest(
        rng: &mut Rng,
        trees: usize,
        depth: usize,
        features: usize,
        targets: usize,
        cmps: &[Cmp],
        nan_true: bool,
    ) -> (Vec<NodeSpec>, Vec<LeafWeight>) {
        let (mut nodes, mut leaves) = (Vec::new(), Vec::new());
        for tree in 0..trees {
            let mut specs: Vec<NodeSpec> = Vec::new();
            // grow breadth first: (id, level)
            let mut open = vec![(0usize, 0usize)];
            let mut next_id = 1;
            while let Some((id, level)) = open.pop() {
                let leaf = level == depth || (level > 0 && rng.below(4) == 0);
                let cmp = cmps[rng.below(cmps.len())];
                let mut spec = NodeSpec {
                    tree,
                    id,
                    cmp: (!leaf).then_some(cmp),
                    feature: rng.below(features),
                    threshold: rng.value(),
                    true_id: 0,
                    false_id: 0,
                    missing_true: nan_true && rng.below(2) == 0,
                    members: (0..3).map(|_| rng.value()).collect(),
                };
                if leaf {
                    for _ in 0..1 + rng.below(2) {
                        let target = rng.below(targets);
                        leaves.push(LeafWeight {
                            tree,
                            node: id,
                            target,
                            weight: rng.value(),
                        });
                    }
                } else {
                    spec.true_id = next_id;
                    spec.false_id = next_id + 1;
                    open.push((next_id, level + 1));
                    open.push((next_id + 1, level + 1));
                    next_id += 2;
                }
                specs.push(spec);
            }
            // shuffle ids within the tree
            let perm: Vec<usize> = {
                let mut p: Vec<usize> = (0..next_id).collect();
                for i in (1..p.len()).rev() {
                    p.swap(i, rng.below(i + 1));
                }
                p
            };
            for s in &mut specs {
                s.id = perm[s.id];
                s.true_id = perm[s.true_id];
                s.false_id = perm[s.false_id];
            }
            for l in leaves
                .iter_mut()
                .filter(|l| l.tree == tree && l.node < next_id)
            {
                l.node = perm[l.node];
            }
            nodes.extend(specs);
        }
        (nodes, leaves)
    }

    /// The textbook walk, one (row, tree) at a time, with ONNX Runtime's aggregation.
    fn reference(
        nodes: &[NodeSpec],
        leaves: &[LeafWeight],
        targets: usize,
        x: &[f32],
        rows: usize,
        stride: usize,
        aggregate: Aggregate,
    ) -> (Vec<f32>, Vec<bool>) {
        let trees = nodes.iter().map(|n| n.tree).max().unwrap() + 1;
        let (mut scores, mut seen) = (vec![0f32; rows * targets], vec![false; rows * targets]);
        for r in 0..rows {
            for tree in 0..trees {
                let find = |id: usize| nodes.iter().find(|n| n.tree == tree && n.id == id).unwrap();
                let ids: Vec<usize> = nodes
                    .iter()
                    .filter(|n| n.tree == tree)
                    .map(|n| n.id)
                    .collect();
                let root = ids
                    .iter()
                    .copied()
                    .find(|&id| {
                        !nodes.iter().any(|n| {
                            n.tree == tree
                                && n.cmp.is_some()
                                && (n.true_id == id || n.false_id == id)
                        })
                    })
                    .unwrap();
                let mut n = find(root);
                while let Some(cmp) = n.cmp {
                    let v = x[r * stride + n.feature];
                    let t = n.threshold;
                    let holds = match cmp {
                        Cmp::Leq => v <= t,
                        Cmp::Lt => v < t,
                        Cmp::Gte => v >= t,
                        Cmp::Gt => v > t,
                        Cmp::Eq => v == t,
                        Cmp::Neq => v != t,
                        Cmp::Member => n.members.contains(&v),
                    };
                    let go = holds || (n.missing_true && v.is_nan());
                    n = find(if go { n.true_id } else { n.false_id });
                }
                for l in leaves.iter().filter(|l| l.tree == tree && l.node == n.id) {
                    let k = r * targets + l.target;
                    scores[k] = match aggregate {
                        Aggregate::Sum | Aggregate::Average => scores[k] + l.weight,
                        Aggregate::Min if seen[k] => scores[k].min(l.weight),
                        Aggregate::Max if seen[k] => scores[k].max(l.weight),
                        _ => l.weight,
                    };
                    seen[k] = true;
                }
            }
        }
        if aggregate == Aggregate::Average {
            scores.iter_mut().for_each(|s| *s /= trees as f32);
        }
        (scores, seen)
    }

    /// A forest rebuilt from its description is the same forest, for every comparison, NaN
    /// routing and member set (the optimized payload stores forests so).
    #[test]
    fn a_forest_rebuilt_from_its_description_is_the_same() {
        let mut rng = Rng(0x2545f4914f6cdd1d);
        let all = [Cmp::Leq, Cmp::Gt, Cmp::Neq, Cmp::Member];
        for (cmps, nan_true) in [(&all[..1], false), (&all[..], true)] {
            for (trees, depth) in [(1, 0), (3, 4), (12, 6)] {
                let (nodes, leaves) = random_forest(&mut rng, trees, depth, 5, 3, cmps, nan_true);
                let forest = Forest::new(&nodes, &leaves, 3).unwrap();
                let (n, l) = forest.describe();
                assert_eq!(Forest::new(&n, &l, 3).unwrap(), forest);
            }
        }
    }

    #[test]
    fn every_walk_gives_the_textbook_walks_leaves_in_tree_order() {
        let mut rng = Rng(0x9e3779b97f4a7c15);
        // (comparisons, targets, some node sends NaN true): one comparison and no NaN routing
        // take the compiled walks
        let all = Cmp::ALL;
        let cases: &[(&[Cmp], usize, bool)] = &[
            (&[Cmp::Leq], 1, false),
            (&[Cmp::Lt], 3, false),
            (&[Cmp::Gte], 1, false),
            (&[Cmp::Gt], 2, false),
            (&[Cmp::Leq], 2, true),
            (&all, 3, true),
        ];
        for (case, &(cmps, targets, nan_true)) in cases.iter().enumerate() {
            for &(trees, depth, rows) in
                &[(1, 0, 1), (3, 4, 1), (37, 6, 1), (20, 5, 17), (5, 8, 40)]
            {
                let features = 7;
                let (nodes, leaves) =
                    random_forest(&mut rng, trees, depth, features, targets, cmps, nan_true);
                let forest = Forest::new(&nodes, &leaves, targets).unwrap();
                assert_eq!(forest.trees(), trees);
                let stride = features + 2;
                let mut x: Vec<f32> = (0..rows * stride).map(|_| rng.value()).collect();
                // NaN, exact thresholds and member values among the inputs
                for (i, v) in x.iter_mut().enumerate() {
                    match i % 11 {
                        3 => *v = f32::NAN,
                        5 => *v = nodes[i % nodes.len()].threshold,
                        7 => *v = nodes[i % nodes.len()].members[0],
                        _ => {}
                    }
                }
                for aggregate in [
                    Aggregate::Sum,
                    Aggregate::Average,
                    Aggregate::Min,
                    Aggregate::Max,
                ] {
                    let (want, want_seen) =
                        reference(&nodes, &leaves, targets, &x, rows, stride, aggregate);
                    let mut got = vec![f32::NAN; rows * targets];
                    let mut seen = vec![true; rows * targets];
                    forest.evaluate(&x, rows, stride, aggregate, &mut got, &mut seen);
                    assert_eq!(seen, want_seen, "case {case} {trees} trees {aggregate:?}");
                    for (a, b) in got.iter().zip(&want) {
                        assert_eq!(
                            a.to_bits(),
                            b.to_bits(),
                            "case {case} {trees} trees {rows} rows {aggregate:?}"
                        );
                    }
                }
            }
        }
    }

    fn node(tree: usize, id: usize, children: Option<(usize, usize)>) -> NodeSpec {
        NodeSpec {
            tree,
            id,
            cmp: children.map(|_| Cmp::Leq),
            feature: 0,
            threshold: 0.5,
            true_id: children.map_or(0, |c| c.0),
            false_id: children.map_or(0, |c| c.1),
            missing_true: false,
            members: vec![],
        }
    }

    #[test]
    fn a_description_that_is_not_a_forest_is_refused_with_its_reason() {
        let leaf = |tree, node| LeafWeight {
            tree,
            node,
            target: 0,
            weight: 1.0,
        };
        let cases: Vec<(Vec<NodeSpec>, Vec<LeafWeight>, &str)> = vec![
            (vec![], vec![], "without nodes"),
            (
                vec![node(0, 0, Some((1, 7))), node(0, 1, None)],
                vec![],
                "false child 7",
            ),
            (vec![node(0, 0, None), node(0, 1, None)], vec![], "2 roots"),
            (
                vec![
                    node(0, 0, Some((1, 2))),
                    node(0, 1, Some((2, 1))),
                    node(0, 2, Some((1, 2))),
                ],
                vec![],
                "leads to itself",
            ),
            (
                vec![
                    node(0, 3, Some((1, 2))),
                    node(0, 1, Some((2, 4))),
                    node(0, 2, Some((1, 4))),
                    node(0, 4, None),
                ],
                vec![],
                "loops",
            ),
            (
                vec![node(0, 0, None), node(0, 0, None)],
                vec![],
                "two nodes with id 0",
            ),
            (vec![node(0, 0, None)], vec![leaf(0, 5)], "does not exist"),
            (
                vec![node(0, 0, Some((1, 2))), node(0, 1, None), node(0, 2, None)],
                vec![leaf(0, 0)],
                "is a branch",
            ),
            (
                vec![node(0, 0, None)],
                vec![LeafWeight {
                    tree: 0,
                    node: 0,
                    target: 3,
                    weight: 1.0,
                }],
                "target 3 of 1",
            ),
        ];
        for (nodes, leaves, why) in cases {
            let e = Forest::new(&nodes, &leaves, 1).unwrap_err();
            assert!(e.0.contains(why), "{why}: {e}");
        }
    }
}
