//! The NNEF form of the pipeline operators (feature transforms, linear models, SVMs): one
//! primitive, `edgefleet_ml(inputs, floats, ints, kind)`, whose `kind` names the operator and
//! whose two constant tensors hold its parameters in the order the operator wrote them
//! ([`Record`]). Every vector and text is length-prefixed in `ints`, so a reader checks each
//! length against what is left and fails with a clear error on a short or long record, and
//! texts (class names) travel as UTF-8 bytes, not as NNEF string literals. Reading goes
//! through the same constructors as the ONNX parser, so a payload is validated as its ONNX
//! source was.

use tract_nnef::internal::*;
use tract_nnef::ser::{array, invocation, string};

use super::features::{
    ArrayFeatureExtractor, Binarizer, FeatureVectorizer, Imputer, LabelEncoder, Normalizer, OneHot,
    Scaler,
};
use super::linear::{LinearClassifier, LinearRegressor};
use super::record::{NnefForm, Reader, Record};
use super::rows::{RowOp, Rows};
use super::svm::{SvmClassifier, SvmRegressor};

impl<R: Rows + NnefForm> NnefForm for RowOp<R> {
    const KIND: &'static str = R::KIND;

    fn write(&self, record: &mut Record) {
        self.0.write(record)
    }

    fn read(reader: &mut Reader) -> TractResult<Self> {
        R::read(reader).map(RowOp)
    }
}

/// A node's inputs as one NNEF array argument (for a primitive that takes `tensor<scalar>[]`).
pub(crate) fn inputs_array(ast: &IntoAst, node: &TypedNode) -> Arc<RValue> {
    let inputs: Vec<RValue> = node
        .inputs
        .iter()
        .map(|i| ast.mapping[i].as_ref().clone())
        .collect();
    Arc::new(array(inputs))
}

/// The primitive's name.
const PRIMITIVE: &str = "edgefleet_ml";

/// Writes `op` as an `edgefleet_ml` invocation.
fn dump<O: NnefForm + TypedOp>(
    ast: &mut IntoAst,
    node: &TypedNode,
    op: &O,
) -> TractResult<Option<Arc<RValue>>> {
    let mut record = Record::default();
    op.write(&mut record);
    let name = &node.name;
    let floats = ast.konst_variable(
        format!("{name}.floats"),
        &tensor1(record.streams().0).into_arc_tensor(),
    )?;
    let ints = ast.konst_variable(
        format!("{name}.ints"),
        &tensor1(record.streams().1).into_arc_tensor(),
    )?;
    Ok(Some(invocation(
        PRIMITIVE,
        &[inputs_array(ast, node), floats, ints],
        &[("kind", string(O::KIND))],
    )))
}

/// Builds an operator of type `O` from a record.
fn build<O: NnefForm + TypedOp>(record: &Record) -> TractResult<Box<dyn TypedOp>> {
    let mut reader = record.reader(O::KIND);
    let op = O::read(&mut reader)?;
    reader.finish()?;
    Ok(Box::new(op))
}

/// Registers the dumpers and the primitive for every operator listed, from one list so that
/// what is written can always be read.
macro_rules! forms {
    ($($op:ty),* $(,)?) => {
        /// Registers the NNEF forms.
        pub(crate) fn register_nnef(reg: &mut Registry) {
            $( reg.register_dumper(dump::<$op>); )*
            reg.register_primitive(
                PRIMITIVE,
                &[
                    TypeName::Scalar.tensor().array().named("inputs"),
                    TypeName::Scalar.tensor().named("floats"),
                    TypeName::Integer.tensor().named("ints"),
                    TypeName::String.named("kind"),
                ],
                &[("output", TypeName::Scalar.tensor())],
                |builder, call| {
                    let inputs: TVec<OutletId> = call.named_arg_as(builder, "inputs")?;
                    let kind: String = call.named_arg_as(builder, "kind")?;
                    let floats: Arc<Tensor> = call.named_arg_as(builder, "floats")?;
                    let ints: Arc<Tensor> = call.named_arg_as(builder, "ints")?;
                    let record = Record::from_streams(
                        floats.cast_to::<f32>()?.try_as_plain_ram()?.as_slice::<f32>()?.to_vec(),
                        ints.cast_to::<i64>()?.try_as_plain_ram()?.as_slice::<i64>()?.to_vec(),
                    );
                    let op = match kind.as_str() {
                        $( <$op as NnefForm>::KIND => build::<$op>(&record)?, )*
                        other => bail!(
                            "{PRIMITIVE}: operator '{other}' is not one this agent knows \
                             (a payload from a newer edgefleet? update the agent)"
                        ),
                    };
                    builder.wire(op, &inputs)
                },
            );
        }
    };
}

forms!(
    RowOp<Scaler>,
    RowOp<Normalizer>,
    RowOp<Imputer>,
    RowOp<Binarizer>,
    OneHot,
    LabelEncoder,
    ArrayFeatureExtractor,
    FeatureVectorizer,
    RowOp<LinearClassifier>,
    RowOp<LinearRegressor>,
    RowOp<SvmClassifier>,
    RowOp<SvmRegressor>,
);
