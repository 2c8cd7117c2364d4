"""The ai.onnx.ml test models (runtime/tests/ml.rs): small scikit-learn, LightGBM and XGBoost
models as their exporters write them, and hand-built graphs for the operators exporters use
inside pipelines, each with inputs and ONNX Runtime's outputs.

    PYTHONPATH=~/.cache/edgefleet/bench/py python3 make.py   (bench/run.sh installs the packages)

Writes NAME.onnx, NAME.x.npy and NAME.out0.npy, NAME.out1.npy ... (ONNX Runtime's outputs in
graph order; a ZipMap's list of dicts as the probability matrix). Deterministic (fixed seeds).
"""
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer, StandardScaler
from sklearn.svm import SVC, SVR
from skl2onnx import to_onnx

OPSETS = {"": 17, "ai.onnx.ml": 3}
rng = np.random.default_rng(7)

Xc, yc = load_breast_cancer(return_X_y=True)
Xr, yr = load_diabetes(return_X_y=True)
Xi, yi = load_iris(return_X_y=True)
Xc, Xr, Xi = Xc.astype(np.float32), Xr.astype(np.float32), Xi.astype(np.float32)
# string class labels (skl2onnx writes classlabels_strings, sorted; the runtime answers indices)
CLASS_NAMES = ["setosa", "versicolor", "virginica"]
yi_names = np.array(CLASS_NAMES)[yi]


def rows(X, n=24, nan=False):
    """n rows of X (every 7th), some values replaced by NaN when the model takes missing values."""
    x = X[::7][:n].copy()
    if nan:
        x[rng.random(x.shape) < 0.1] = np.nan
    return x


def save(name, model, x):
    onnx.save(model, f"{name}.onnx")
    np.save(f"{name}.x.npy", x)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {sess.get_inputs()[0].name: x})
    for i, o in enumerate(outs):
        if isinstance(o, list):  # ZipMap: a list of {label: probability}
            o = np.array([[d[k] for k in sorted(d)] for d in o], dtype=np.float32)
        o = np.asarray(o)
        if o.dtype.kind in "UO":  # string labels: their index among the model's sorted classes
            o = np.array([CLASS_NAMES.index(v) for v in o.tolist()], dtype=np.int64)
        np.save(f"{name}.out{i}.npy", o)
    print(name, [n.op_type for n in model.graph.node], [np.asarray(o).shape for o in outs])


def skl(name, est, X, zipmap=False, nan=False):
    opts = {id(est): {"zipmap": zipmap}} if hasattr(est, "predict_proba") else None
    save(name, to_onnx(est, X[:1], options=opts, target_opset=OPSETS), rows(X, nan=nan))


skl("gbt_binary", GradientBoostingClassifier(n_estimators=20, max_depth=3, random_state=0).fit(Xc, yc), Xc)
skl("gbt_binary_zipmap", GradientBoostingClassifier(n_estimators=8, max_depth=2, random_state=0).fit(Xc, yc), Xc, zipmap=True)
skl("gbt_multiclass", GradientBoostingClassifier(n_estimators=10, max_depth=2, random_state=0).fit(Xi, yi), Xi)
skl("rf_multiclass", RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0).fit(Xi, yi), Xi)
skl("rf_string_labels_zipmap", RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0).fit(Xi, yi_names), Xi, zipmap=True)
skl("rf_regressor", RandomForestRegressor(n_estimators=10, max_depth=5, random_state=0).fit(Xr, yr), Xr)
skl("scaler_normalizer_logreg", make_pipeline(StandardScaler(), Normalizer(), LogisticRegression(max_iter=500)).fit(Xi, yi), Xi)
skl("scaler_logreg_binary", make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(Xc, yc), Xc)
skl("svc_rbf_proba", make_pipeline(StandardScaler(), SVC(probability=True, random_state=0)).fit(Xi, yi), Xi)
skl("svc_binary", make_pipeline(StandardScaler(), SVC()).fit(Xc[:200], yc[:200]), Xc)
skl("svr_rbf", make_pipeline(StandardScaler(), SVR()).fit(Xr, yr), Xr)
skl("linear_regression", LinearRegression().fit(Xr, yr), Xr)
skl("ridge_two_targets", Ridge().fit(Xr, np.stack([yr, yr * 0.5], 1)), Xr)

import lightgbm
import xgboost
from onnxmltools import convert_lightgbm, convert_xgboost
from onnxmltools.convert.common.data_types import FloatTensorType

lgb = lightgbm.LGBMClassifier(n_estimators=20, num_leaves=8, verbose=-1, random_state=0).fit(Xc, yc)
save("lgbm_binary_missing", convert_lightgbm(lgb, initial_types=[("x", FloatTensorType([None, Xc.shape[1]]))], zipmap=False, target_opset=15), rows(Xc, nan=True))
xgr = xgboost.XGBRegressor(n_estimators=20, max_depth=3, random_state=0).fit(Xr, yr)
save("xgb_regressor", convert_xgboost(xgr, initial_types=[("x", FloatTensorType([None, Xr.shape[1]]))], target_opset=15), rows(Xr, nan=True))
xgc = xgboost.XGBClassifier(n_estimators=10, max_depth=2, random_state=0).fit(Xi, yi)
save("xgb_multiclass", convert_xgboost(xgc, initial_types=[("x", FloatTensorType([None, Xi.shape[1]]))], target_opset=15), rows(Xi))


def graph(name, nodes, inputs, outputs, x, ml=3):
    g = helper.make_graph(nodes, name, inputs, outputs)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", ml)])
    m.ir_version = 9
    save(name, m, x)


F = TensorProto.FLOAT
x4 = rng.normal(size=(9, 4)).astype(np.float32)
x4[1, 2] = np.nan
x4[5, 0] = np.nan
# Imputer (NaN -> per-column value), Binarizer, Normalizer L2 and L1 side by side
graph(
    "transforms",
    [
        helper.make_node("Imputer", ["x"], ["imp"], domain="ai.onnx.ml", imputed_value_floats=[0.5, -1.0, 2.0, 3.0], replaced_value_float=float("nan")),
        helper.make_node("Binarizer", ["imp"], ["bin"], domain="ai.onnx.ml", threshold=0.25),
        helper.make_node("Normalizer", ["imp"], ["l2"], domain="ai.onnx.ml", norm="L2"),
        helper.make_node("Normalizer", ["imp"], ["l1"], domain="ai.onnx.ml", norm="L1"),
        helper.make_node("Normalizer", ["imp"], ["mx"], domain="ai.onnx.ml", norm="MAX"),
        helper.make_node("Scaler", ["imp"], ["sc"], domain="ai.onnx.ml", offset=[0.1, 0.2, 0.3, 0.4], scale=[2.0, 0.5, 1.0, 3.0]),
    ],
    [helper.make_tensor_value_info("x", F, [None, 4])],
    [helper.make_tensor_value_info(n, F, [None, 4]) for n in ["imp", "bin", "l2", "l1", "mx", "sc"]],
    x4,
)
# integer categories: OneHotEncoder, LabelEncoder, ArrayFeatureExtractor, FeatureVectorizer
xi = np.array([[3, 1], [7, 3], [1, 9], [3, 3], [9, 7]], dtype=np.int64)
graph(
    "encoders",
    [
        helper.make_node("OneHotEncoder", ["x"], ["hot"], domain="ai.onnx.ml", cats_int64s=[1, 3, 7], zeros=1),
        helper.make_node("LabelEncoder", ["x"], ["enc"], domain="ai.onnx.ml", keys_int64s=[1, 3, 7], values_floats=[0.5, 1.5, 2.5], default_float=-9.0),
        helper.make_node("Constant", [], ["idx"], value=helper.make_tensor("idx", TensorProto.INT64, [1], [1])),
        helper.make_node("ArrayFeatureExtractor", ["x", "idx"], ["col"], domain="ai.onnx.ml"),
        helper.make_node("Cast", ["col"], ["colf"], to=TensorProto.FLOAT),
        helper.make_node("FeatureVectorizer", ["enc", "colf"], ["vec"], domain="ai.onnx.ml", inputdimensions=[2, 3]),
    ],
    [helper.make_tensor_value_info("x", TensorProto.INT64, [None, 2])],
    [
        helper.make_tensor_value_info("hot", F, [None, 2, 3]),
        helper.make_tensor_value_info("enc", F, [None, 2]),
        helper.make_tensor_value_info("col", TensorProto.INT64, [None, 1]),
        helper.make_tensor_value_info("vec", F, [None, 5]),
    ],
    xi,
)


def as_v5(src, name):
    """The regressor `src` (TreeEnsembleRegressor, ai.onnx.ml 3) rewritten as TreeEnsemble
    (ai.onnx.ml 5): nodes by array position, leaves by their own index."""
    m = onnx.load(f"{src}.onnx")
    n = next(n for n in m.graph.node if n.op_type == "TreeEnsembleRegressor")
    a = {t.name: helper.get_attribute_value(t) for t in n.attribute}
    tree, nid = np.array(a["nodes_treeids"]), np.array(a["nodes_nodeids"])
    modes = [m.decode() for m in a["nodes_modes"]]
    branch = [i for i in range(len(modes)) if modes[i] != "LEAF"]
    pos = {(tree[i], nid[i]): k for k, i in enumerate(branch)}
    leaf_of = {}
    for i in range(len(modes)):
        if modes[i] == "LEAF":
            leaf_of[(tree[i], nid[i])] = len(leaf_of)
    weights = {(t, nd): w for t, nd, w in zip(a["target_treeids"], a["target_nodeids"], a["target_weights"])}
    code = {"BRANCH_LEQ": 0, "BRANCH_LT": 1, "BRANCH_GTE": 2, "BRANCH_GT": 3, "BRANCH_EQ": 4, "BRANCH_NEQ": 5}
    def child(t, c):
        return (pos[(t, c)], 0) if (t, c) in pos else (leaf_of[(t, c)], 1)
    tc = [child(tree[i], a["nodes_truenodeids"][i]) for i in branch]
    fc = [child(tree[i], a["nodes_falsenodeids"][i]) for i in branch]
    roots = [pos[(t, 0)] for t in sorted(set(tree))]
    leaves = sorted(leaf_of, key=leaf_of.get)
    node = helper.make_node(
        "TreeEnsemble", ["x"], ["y"], domain="ai.onnx.ml",
        nodes_featureids=[a["nodes_featureids"][i] for i in branch],
        nodes_splits=helper.make_tensor("s", F, [len(branch)], [a["nodes_values"][i] for i in branch]),
        nodes_modes=helper.make_tensor("m", TensorProto.UINT8, [len(branch)], [code[modes[i]] for i in branch]),
        nodes_truenodeids=[c for c, _ in tc], nodes_trueleafs=[l for _, l in tc],
        nodes_falsenodeids=[c for c, _ in fc], nodes_falseleafs=[l for _, l in fc],
        nodes_missing_value_tracks_true=[a.get("nodes_missing_value_tracks_true", [0] * len(modes))[i] for i in branch],
        tree_roots=roots, leaf_targetids=[0] * len(leaves),
        leaf_weights=helper.make_tensor("w", F, [len(leaves)], [weights[l] for l in leaves]),
        n_targets=1, aggregate_function=1, post_transform=0,
    )
    x = np.load(f"{src}.x.npy")
    graph(name, [node], [helper.make_tensor_value_info("x", F, [None, x.shape[1]])], [helper.make_tensor_value_info("y", F, [None, 1])], x, ml=5)


as_v5("rf_regressor", "tree_ensemble_v5")
