//! `#[job]`: parse, validate, expand.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, Ident, ItemFn, LitInt, LitStr, Pat, ReturnType, Type};

#[derive(Default)]
struct Options {
    name: Option<LitStr>,
    retries: Option<LitInt>,
    timeout_ms: Option<LitInt>,
    queue: Option<LitStr>,
    backoff_ms: Option<LitInt>,
    backoff_factor: Option<LitInt>,
    backoff_max_ms: Option<LitInt>,
}

enum ParamKind {
    Data,
    ContextOwned,
    ContextRef,
}

struct Param {
    ident: Ident,
    ty: Type,
    kind: ParamKind,
}

struct Analysis {
    params: Vec<Param>,
    /// The type the function's value has: `T` of `Result<T, E>`, else the
    /// return type.
    value: Type,
    returns_result: bool,
}

fn collect(errors: &mut Option<syn::Error>, error: syn::Error) {
    match errors {
        Some(e) => e.combine(error),
        None => *errors = Some(error),
    }
}

fn parse_options(attr: TokenStream, errors: &mut Option<syn::Error>) -> Options {
    let mut options = Options::default();
    let parser = syn::meta::parser(|meta| {
        let key = meta
            .path
            .get_ident()
            .map(Ident::to_string)
            .unwrap_or_default();
        match key.as_str() {
            "name" => {
                let lit: LitStr = meta.value()?.parse()?;
                if lit.value().is_empty() {
                    return Err(syn::Error::new(lit.span(), "the job name is empty"));
                }
                options.name = Some(lit);
            }
            "queue" => {
                let lit: LitStr = meta.value()?.parse()?;
                if lit.value().is_empty() {
                    return Err(syn::Error::new(lit.span(), "the queue name is empty"));
                }
                options.queue = Some(lit);
            }
            "retries" | "timeout_ms" | "backoff_ms" | "backoff_factor" | "backoff_max_ms" => {
                let lit: LitInt = meta.value()?.parse()?;
                let value: u64 = lit.base10_parse()?;
                let slot = match key.as_str() {
                    "retries" => {
                        lit.base10_parse::<u32>()?;
                        &mut options.retries
                    }
                    "timeout_ms" => {
                        if value == 0 {
                            return Err(syn::Error::new(
                                lit.span(),
                                "`timeout_ms` must be at least 1; leave it out for no timeout",
                            ));
                        }
                        &mut options.timeout_ms
                    }
                    "backoff_factor" => {
                        if value == 0 || lit.base10_parse::<u32>().is_err() {
                            return Err(syn::Error::new(
                                lit.span(),
                                "`backoff_factor` must be from 1 to 4294967295",
                            ));
                        }
                        &mut options.backoff_factor
                    }
                    "backoff_ms" => &mut options.backoff_ms,
                    _ => &mut options.backoff_max_ms,
                };
                *slot = Some(lit);
            }
            _ => {
                return Err(meta.error(
                    "unknown #[job] option; the options are `name`, `retries`, `timeout_ms`, `queue`, `backoff_ms`, `backoff_factor` and `backoff_max_ms`",
                ));
            }
        }
        Ok(())
    });
    if let Err(e) = syn::parse::Parser::parse2(parser, attr) {
        collect(errors, e);
    }
    options
}

fn last_segment(ty: &Type) -> Option<&syn::PathSegment> {
    match ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last(),
        Type::Group(g) => last_segment(&g.elem),
        Type::Paren(p) => last_segment(&p.elem),
        _ => None,
    }
}

fn is_named(ty: &Type, name: &str) -> bool {
    last_segment(ty).is_some_and(|s| s.ident == name)
}

fn analyze(func: &ItemFn, errors: &mut Option<syn::Error>) -> Analysis {
    let sig = &func.sig;
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        collect(
            errors,
            syn::Error::new(
                sig.generics.span(),
                "a #[job] function cannot be generic: the registry needs one concrete signature",
            ),
        );
    }
    if let Some(v) = &sig.variadic {
        collect(
            errors,
            syn::Error::new(v.span(), "a #[job] function cannot be variadic"),
        );
    }
    if sig.constness.is_some() || sig.unsafety.is_some() || sig.abi.is_some() {
        collect(
            errors,
            syn::Error::new(
                sig.fn_token.span,
                "a #[job] function is a plain `fn` or `async fn`",
            ),
        );
    }
    let mut params = Vec::new();
    let mut context_seen = false;
    for input in &sig.inputs {
        let typed = match input {
            FnArg::Receiver(r) => {
                collect(
                    errors,
                    syn::Error::new(
                        r.span(),
                        "a #[job] function is a free function, without `self`",
                    ),
                );
                continue;
            }
            FnArg::Typed(t) => t,
        };
        let ident = match &*typed.pat {
            Pat::Ident(p) if p.subpat.is_none() && p.by_ref.is_none() => p.ident.clone(),
            other => {
                collect(
                    errors,
                    syn::Error::new(
                        other.span(),
                        "a #[job] parameter is a plain name, like `x: i64`",
                    ),
                );
                continue;
            }
        };
        let ty = (*typed.ty).clone();
        let (kind, inner) = match &ty {
            Type::Reference(r) => (ParamKind::ContextRef, &*r.elem),
            other => (ParamKind::ContextOwned, other),
        };
        if is_named(inner, "JobContext") {
            if context_seen {
                collect(
                    errors,
                    syn::Error::new(ty.span(), "a #[job] function takes at most one JobContext"),
                );
            }
            context_seen = true;
            params.push(Param { ident, ty, kind });
            continue;
        }
        match &ty {
            Type::Reference(_) => collect(
                errors,
                syn::Error::new(
                    ty.span(),
                    "a #[job] parameter is decoded from JSON and must be an owned type: take `String` for `&str`, `Vec<T>` for `&[T]`",
                ),
            ),
            Type::ImplTrait(_) => collect(
                errors,
                syn::Error::new(
                    ty.span(),
                    "a #[job] parameter needs a concrete type, not `impl Trait`",
                ),
            ),
            _ => {}
        }
        params.push(Param {
            ident,
            ty,
            kind: ParamKind::Data,
        });
    }
    let ret: Type = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => (**ty).clone(),
    };
    let result_value = last_segment(&ret).and_then(|s| {
        if s.ident != "Result" {
            return None;
        }
        match &s.arguments {
            syn::PathArguments::AngleBracketed(args) => args.args.iter().find_map(|a| match a {
                syn::GenericArgument::Type(t) => Some(t.clone()),
                _ => None,
            }),
            _ => None,
        }
    });
    let returns_result = result_value.is_some();
    Analysis {
        params,
        value: result_value.unwrap_or(ret),
        returns_result,
    }
}

pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = None;
    let options = parse_options(attr, &mut errors);
    let func: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(e) => {
            let e = e.to_compile_error();
            return quote!(#item #e);
        }
    };
    let analysis = analyze(&func, &mut errors);
    if let Some(errors) = errors {
        let errors = errors.to_compile_error();
        return quote!(#func #errors);
    }
    let handle = expand_handle(&func, &options, &analysis);
    quote!(#func #handle)
}

fn int_or(lit: &Option<LitInt>, default: TokenStream) -> TokenStream {
    match lit {
        Some(l) => quote!(#l),
        None => default,
    }
}

fn expand_handle(func: &ItemFn, options: &Options, analysis: &Analysis) -> TokenStream {
    let ident = &func.sig.ident;
    let vis = &func.vis;
    let fn_name = ident.to_string();
    let name = options
        .name
        .clone()
        .unwrap_or_else(|| LitStr::new(&fn_name, ident.span()));
    let is_async = func.sig.asyncness.is_some();
    let value = &analysis.value;
    let data: Vec<&Param> = analysis
        .params
        .iter()
        .filter(|p| matches!(p.kind, ParamKind::Data))
        .collect();
    let names: Vec<String> = data.iter().map(|p| p.ident.to_string()).collect();
    let idents: Vec<&Ident> = data.iter().map(|p| &p.ident).collect();
    let types: Vec<&Type> = data.iter().map(|p| &p.ty).collect();
    let slots: Vec<Ident> = (0..data.len())
        .map(|i| format_ident!("__rqm_arg{}", i))
        .collect();
    let indices: Vec<usize> = (0..data.len()).collect();

    let input_kind = match types.as_slice() {
        [] => quote!(::rqm_core::__private::NoInput),
        [one] if is_named(one, "Value") => quote!(::rqm_core::__private::AnyJson),
        [one] => quote!(::rqm_core::__private::Exact<#one>),
        many => quote!(::rqm_core::__private::Exact<(#(#many,)*)>),
    };
    let input_expr = match idents.as_slice() {
        [] => quote!(::rqm_core::Input::None),
        [one] => {
            let n = &names[0];
            quote!(::rqm_core::Input::Args(::rqm_core::__private::arg(&#one, NAME, #n)))
        }
        many => quote!(::rqm_core::Input::Args(
            ::rqm_core::__private::serde_json::Value::Array(::std::vec![
                #(::rqm_core::__private::arg(&#many, NAME, #names)),*
            ])
        )),
    };
    let after = (!data.is_empty()).then(|| {
        quote! {
            /// A job of this function taking the previous node's result.
            pub fn after() -> ::rqm_core::Job<Output> {
                ::rqm_core::Job::new(NAME, ::rqm_core::Input::Previous)
            }
        }
    });
    let mut data_slots = slots.iter();
    let call_args: Vec<TokenStream> = analysis
        .params
        .iter()
        .map(|p| match p.kind {
            ParamKind::Data => {
                let slot = data_slots.next().expect("one slot per data parameter");
                quote!(#slot)
            }
            ParamKind::ContextOwned => quote!(::std::clone::Clone::clone(&__rqm_ctx)),
            ParamKind::ContextRef => quote!(&__rqm_ctx),
        })
        .collect();
    let decode = quote! {
        let ::rqm_core::Invocation { input: __rqm_input, kwargs: __rqm_kwargs, context: __rqm_ctx } = __rqm_inv;
        #[allow(unused_mut, unused_variables)]
        let mut __rqm_values = ::rqm_core::__private::bind(PARAMS, __rqm_input, __rqm_kwargs, &__rqm_ctx)?;
        #(
            let #slots: #types = ::rqm_core::__private::decode(&mut __rqm_values, #indices, #names, &__rqm_ctx)?;
        )*
    };
    let finish = if analysis.returns_result {
        quote!(::rqm_core::__private::finish_result(__rqm_ret, &__rqm_ctx))
    } else {
        quote!(::rqm_core::__private::finish(__rqm_ret, &__rqm_ctx))
    };
    let (call_fn, call_kind) = if is_async {
        (
            quote! {
                pub fn call(__rqm_inv: ::rqm_core::Invocation) -> ::rqm_core::JobFuture {
                    ::std::boxed::Box::pin(async move {
                        #decode
                        let __rqm_ret = super::#ident(#(#call_args),*).await;
                        #finish
                    })
                }
            },
            quote!(::rqm_core::Call::Async(#ident::call)),
        )
    } else {
        (
            quote! {
                pub fn call(__rqm_inv: ::rqm_core::Invocation) -> ::rqm_core::JobResult {
                    #decode
                    let __rqm_ret = super::#ident(#(#call_args),*);
                    #finish
                }
            },
            quote!(::rqm_core::Call::Blocking(#ident::call)),
        )
    };
    let retries = int_or(&options.retries, quote!(0));
    let timeout = match &options.timeout_ms {
        Some(l) => quote!(::std::option::Option::Some(#l)),
        None => quote!(::std::option::Option::None),
    };
    let queue = match &options.queue {
        Some(l) => quote!(::std::option::Option::Some(#l)),
        None => quote!(::std::option::Option::None),
    };
    let backoff = if options.backoff_ms.is_some()
        || options.backoff_factor.is_some()
        || options.backoff_max_ms.is_some()
    {
        let initial = int_or(
            &options.backoff_ms,
            quote!(::rqm_core::Backoff::DEFAULT.initial_ms),
        );
        let factor = int_or(
            &options.backoff_factor,
            quote!(::rqm_core::Backoff::DEFAULT.factor),
        );
        let max = int_or(
            &options.backoff_max_ms,
            quote!(::rqm_core::Backoff::DEFAULT.max_ms),
        );
        quote!(::std::option::Option::Some(::rqm_core::Backoff { initial_ms: #initial, factor: #factor, max_ms: #max }))
    } else {
        quote!(::std::option::Option::None)
    };
    let doc = format!(
        "The `#[job]` handle of [`{fn_name}`](fn@{fn_name}): build its nodes with `job(..)`."
    );
    let value_span = value.span();
    let output_ty =
        quote_spanned!(value_span=> <#value as ::rqm_core::__private::IntoOutput>::Value);
    let adds = quote_spanned!(value_span=> <#value as ::rqm_core::__private::IntoOutput>::ADDS);
    quote! {
        #[doc = #doc]
        #[allow(non_snake_case, dead_code, unused_imports, clippy::all)]
        #vis mod #ident {
            use super::*;

            /// The name projects call this function by.
            pub const NAME: &str = #name;
            /// The parameters' names, in order.
            pub const PARAMS: &[&str] = &[#(#names),*];
            /// The job's result type.
            pub type Output = #output_ty;
            /// What the job takes as a previous node's result.
            pub type Input = #input_kind;
            /// Whether the job may append nodes.
            pub const ADDS: bool = #adds;

            /// A job of this function with these arguments.
            pub fn job(#(#idents: #types),*) -> ::rqm_core::Job<Output> {
                ::rqm_core::Job::new(NAME, #input_expr)
            }

            #after

            /// Checks that an input decodes into the parameters.
            pub fn check(
                __rqm_args: ::std::option::Option<&::rqm_core::__private::serde_json::Value>,
                __rqm_kwargs: ::std::option::Option<&::rqm_core::__private::serde_json::Map<::std::string::String, ::rqm_core::__private::serde_json::Value>>,
            ) -> ::std::result::Result<(), ::std::string::String> {
                #[allow(unused_mut, unused_variables)]
                let mut __rqm_values = ::rqm_core::__private::bind_input(
                    PARAMS,
                    __rqm_args.cloned(),
                    __rqm_kwargs.cloned(),
                )?;
                #(::rqm_core::__private::check::<#types>(&mut __rqm_values, #indices, #names)?;)*
                ::std::result::Result::Ok(())
            }

            /// Calls the function on an invocation.
            #call_fn

        }

        ::rqm_core::__private::inventory::submit! {
            ::rqm_core::__private::JobFunction {
                name: #ident::NAME,
                defined_at: ::std::concat!(::std::module_path!(), "::", #fn_name, " (", ::std::file!(), ":", ::std::line!(), ")"),
                params: #ident::PARAMS,
                retries: #retries,
                backoff: #backoff,
                timeout_ms: #timeout,
                queue: #queue,
                check: #ident::check,
                call: #call_kind,
            }
        }
    }
}
