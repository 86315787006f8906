//! `project!`: parse, validate, expand.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, Ident, Token, braced, bracketed, parenthesized};

struct List {
    nodes: Punctuated<NodeSyntax, Token![,]>,
}

struct NodeSyntax {
    blocking: Option<Ident>,
    previous: Option<Ident>,
    body: Body,
    methods: Vec<Method>,
}

enum Body {
    Group {
        span: Span,
        list: List,
    },
    Job {
        path: syn::Path,
        args: Punctuated<Expr, Token![,]>,
    },
    Value {
        span: Span,
        expr: Expr,
    },
}

struct Method {
    name: Ident,
    args: Punctuated<Expr, Token![,]>,
}

impl Parse for List {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        Ok(List {
            nodes: Punctuated::parse_terminated(input)?,
        })
    }
}

/// Whether the next token is the keyword `word` used as a prefix, not a
/// function of that name.
fn prefix(input: ParseStream<'_>, word: &str) -> bool {
    let fork = input.fork();
    match fork.parse::<Ident>() {
        Ok(ident) if ident == word => !(fork.peek(syn::token::Paren) || fork.peek(Token![::])),
        _ => false,
    }
}

impl Parse for NodeSyntax {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut blocking = None;
        let mut previous = None;
        loop {
            if prefix(input, "blocking") {
                let kw: Ident = input.parse()?;
                if blocking.replace(kw.clone()).is_some() {
                    return Err(syn::Error::new(kw.span(), "`blocking` is given twice"));
                }
            } else if prefix(input, "previous_args") {
                let kw: Ident = input.parse()?;
                if previous.replace(kw.clone()).is_some() {
                    return Err(syn::Error::new(kw.span(), "`previous_args` is given twice"));
                }
            } else {
                break;
            }
        }
        let body = if input.peek(syn::token::Bracket) {
            let content;
            let bracket = bracketed!(content in input);
            Body::Group {
                span: bracket.span.join(),
                list: content.parse()?,
            }
        } else if input.peek(syn::token::Brace) {
            let content;
            let brace = braced!(content in input);
            Body::Value {
                span: brace.span.join(),
                expr: content.parse()?,
            }
        } else {
            let path: syn::Path = input.parse().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "expected a node: `function(args)`, a group `[ ... ]` or `{ expression }`",
                )
            })?;
            let content;
            parenthesized!(content in input);
            Body::Job {
                path,
                args: Punctuated::parse_terminated(&content)?,
            }
        };
        let mut methods = Vec::new();
        while input.peek(Token![.]) {
            input.parse::<Token![.]>()?;
            let name: Ident = input.parse()?;
            let content;
            parenthesized!(content in input);
            methods.push(Method {
                name,
                args: Punctuated::parse_terminated(&content)?,
            });
        }
        Ok(NodeSyntax {
            blocking,
            previous,
            body,
            methods,
        })
    }
}

struct Expander {
    errors: Option<syn::Error>,
    checks: Vec<TokenStream>,
}

impl Expander {
    fn error(&mut self, span: Span, message: &str) {
        let e = syn::Error::new(span, message);
        match &mut self.errors {
            Some(all) => all.combine(e),
            None => self.errors = Some(e),
        }
    }

    /// The node expressions of a list.
    fn list(&mut self, list: &List) -> Vec<TokenStream> {
        let nodes: Vec<&NodeSyntax> = list.nodes.iter().collect();
        let mut out = Vec::with_capacity(nodes.len());
        for (i, node) in nodes.iter().enumerate() {
            out.push(self.node(node, i.checked_sub(1).map(|p| nodes[p])));
        }
        out
    }

    fn node(&mut self, node: &NodeSyntax, previous: Option<&NodeSyntax>) -> TokenStream {
        let blocking = node
            .blocking
            .as_ref()
            .map(|kw| quote_spanned!(kw.span()=> .blocking()));
        match &node.body {
            Body::Job { path, args } => {
                let mut expr = if let Some(kw) = &node.previous {
                    match previous {
                        None => self.error(
                            kw.span(),
                            "`previous_args` on the first node of a list: there is no previous node to take a result from",
                        ),
                        Some(prev) => {
                            if let Some(prev_ty) = output_type(prev) {
                                self.checks.push(quote_spanned! {kw.span()=>
                                    let _ = ::rqm_core::__private::accepts::<#path::Input, #prev_ty>;
                                });
                            }
                        }
                    }
                    if !args.is_empty() {
                        self.error(
                            args.span(),
                            "a job with `previous_args` takes the previous node's result; give it no arguments",
                        );
                    }
                    quote_spanned!(path.span()=> #path::after())
                } else {
                    let args = args.iter();
                    quote_spanned!(path.span()=> #path::job(#(#args),*))
                };
                for m in &node.methods {
                    let (name, args) = (&m.name, m.args.iter());
                    expr = quote_spanned!(name.span()=> #expr.#name(#(#args),*));
                }
                quote!(::rqm_core::Node::from(#expr #blocking))
            }
            Body::Group { span, list } => {
                self.only_jobs(node, "a group");
                let children = self.list(list);
                quote_spanned!(*span=> ::rqm_core::Node::group(::std::vec![#(#children),*]) #blocking)
            }
            Body::Value { span, expr } => {
                self.only_jobs(node, "a `{ expression }` node");
                quote_spanned!(*span=> ::rqm_core::Node::from(#expr) #blocking)
            }
        }
    }

    fn only_jobs(&mut self, node: &NodeSyntax, what: &str) {
        if let Some(kw) = &node.previous {
            self.error(
                kw.span(),
                &format!("`previous_args` applies to a job `function()`, not to {what}"),
            );
        }
        for m in &node.methods {
            self.error(
                m.name.span(),
                &format!(
                    "`.{}(..)` is a job option; {what} takes only `blocking`",
                    m.name
                ),
            );
        }
    }
}

/// Groups up to this many children have a result type known at compile time.
const MAX_TYPED_GROUP: usize = 8;

/// The type `project!` checks a `previous_args` job against: the previous
/// job's result, or a group's tuple of results; `None` when it is not known.
fn output_type(node: &NodeSyntax) -> Option<TokenStream> {
    let (ty, adds) = shape(node)?;
    Some(
        quote!(<::rqm_core::__private::Select<{ #adds }> as ::rqm_core::__private::Choose<#ty>>::Out),
    )
}

fn shape(node: &NodeSyntax) -> Option<(TokenStream, TokenStream)> {
    match &node.body {
        Body::Job { path, .. } => Some((
            quote!(::rqm_core::__private::Out<#path::Output>),
            quote!(#path::ADDS),
        )),
        Body::Group { list, .. } => {
            if list.nodes.len() > MAX_TYPED_GROUP {
                return None;
            }
            let mut types = Vec::new();
            let mut adds = vec![quote!(false)];
            for child in &list.nodes {
                let (t, a) = shape(child)?;
                types.push(t);
                adds.push(a);
            }
            Some((
                quote!(::rqm_core::__private::GroupOf<(#(#types,)*)>),
                quote!(#(#adds)||*),
            ))
        }
        Body::Value { .. } => None,
    }
}

pub(crate) fn expand(input: TokenStream) -> TokenStream {
    let list: List = match syn::parse2(input) {
        Ok(list) => list,
        Err(e) => return e.to_compile_error(),
    };
    let mut expander = Expander {
        errors: None,
        checks: Vec::new(),
    };
    let nodes = expander.list(&list);
    if let Some(errors) = expander.errors {
        let errors = errors.to_compile_error();
        return quote!({ #errors ::rqm_core::Project::default() });
    }
    let checks = expander.checks;
    quote! {
        {
            #(#checks)*
            ::rqm_core::Project::new(::std::vec![#(#nodes),*])
        }
    }
}
