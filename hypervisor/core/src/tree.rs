//! A device tree read once into memory: every node with its full path,
//! the cell sizes its parent gives it, its phandle and its properties.
//!
//! Built in the same pass that checks the blob ([`crate::dtb::walk`]), and
//! shared by the SDT reader and every guest's device tree. A lookup by name
//! compares bytes in a node's own few properties; the `fdt` crate, which
//! this replaced, parsed every property of a node for each lookup (a UTF-8
//! check of each name it compared) and every property of every node it
//! skipped on the way to one: about 470,000 of the boot CPU's 1.15
//! million instructions.

use crate::dtb::{DtbError, Visit};
use alloc::string::String;
use alloc::vec::Vec;

/// One property: its name and its raw value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Property<'a> {
    /// ASCII, as the check made sure, without the NUL; compared as bytes.
    pub name: &'a [u8],
    pub value: &'a [u8],
}

#[derive(Clone, Debug)]
pub struct Node<'a> {
    /// From the root, `/` for the root itself.
    pub path: String,
    /// Index of the parent in [`Tree::nodes`]; `None` for the root.
    pub parent: Option<usize>,
    /// `#address-cells` and `#size-cells` of the parent (2 and 1 where it
    /// has none): how to read this node's `reg`.
    pub addr_cells: usize,
    pub size_cells: usize,
    /// `phandle`, else `linux,phandle`.
    pub phandle: Option<u32>,
    /// In the blob's order.
    pub properties: Vec<Property<'a>>,
}

impl<'a> Node<'a> {
    /// Its name, with its unit address; empty for the root.
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or_default()
    }

    /// The first property called `name`, as a lookup in the blob finds it.
    pub fn property(&self, name: &str) -> Option<&'a [u8]> {
        self.properties
            .iter()
            .find(|p| p.name == name.as_bytes())
            .map(|p| p.value)
    }

    /// The first cell of property `name`.
    pub fn u32(&self, name: &str) -> Option<u32> {
        cell(self.property(name)?)
    }

    /// Whether `compatible` lists `c`, compared in place: the reader asks
    /// it of every node for each kind of node it looks for.
    pub fn is_compatible(&self, c: &str) -> bool {
        self.property("compatible")
            .is_some_and(|v| v.split(|b| *b == 0).any(|s| s == c.as_bytes()))
    }

    /// `#address-cells` and `#size-cells` that this node gives its children.
    fn own_cells(&self) -> (usize, usize) {
        (
            self.u32("#address-cells").map_or(2, |v| v as usize),
            self.u32("#size-cells").map_or(1, |v| v as usize),
        )
    }
}

fn cell(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

/// Every node of a checked device tree, in the blob's order (a parent
/// before its children), and its memory reservations.
#[derive(Clone, Debug)]
pub struct Tree<'a> {
    pub nodes: Vec<Node<'a>>,
    /// `/memreserve/` entries as (address, size), empty ones included.
    pub reservations: Vec<(u64, u64)>,
}

/// Builds the tree as [`crate::dtb::walk`] checks the blob.
struct Builder<'a> {
    tree: Tree<'a>,
    /// The nodes open at this point of the walk, innermost last.
    open: Vec<usize>,
}

impl<'a> Visit<'a> for Builder<'a> {
    fn reservation(&mut self, base: u64, size: u64) {
        self.tree.reservations.push((base, size));
    }

    fn begin_node(&mut self, name: &'a [u8]) {
        let nodes = &mut self.tree.nodes;
        let parent = self.open.last().copied();
        // A parent's properties all come before its first child (the check
        // refuses any after), so its cells are known by now.
        let ((addr_cells, size_cells), path) = match parent {
            None => ((2, 1), String::from("/")),
            Some(p) => {
                let above = match nodes[p].path.as_str() {
                    "/" => "",
                    above => above,
                };
                // Built directly: `format!` would run the formatting
                // machinery for each node.
                let mut path = String::with_capacity(above.len() + 1 + name.len());
                path.push_str(above);
                path.push('/');
                // ASCII (the check made sure): each byte is its character.
                path.extend(name.iter().copied().map(char::from));
                (nodes[p].own_cells(), path)
            }
        };
        self.open.push(nodes.len());
        nodes.push(Node {
            path,
            parent,
            addr_cells,
            size_cells,
            phandle: None,
            // Room for all of most nodes' properties (25 of the 26 nodes of
            // QEMU's benchmark SDT have 8 or fewer): one allocation, where
            // a vector grown from empty reallocated once or twice for most.
            properties: Vec::with_capacity(8),
        });
    }

    fn property(&mut self, name: &'a [u8], value: &'a [u8]) {
        if let Some(&i) = self.open.last() {
            self.tree.nodes[i].properties.push(Property { name, value });
        }
    }

    fn end_node(&mut self) {
        if let Some(i) = self.open.pop() {
            let n = &mut self.tree.nodes[i];
            n.phandle = n.u32("phandle").or_else(|| n.u32("linux,phandle"));
        }
    }
}

impl<'a> Tree<'a> {
    /// Checks `blob` ([`crate::dtb::check`]) and reads it, in one pass.
    pub fn new(blob: &'a [u8]) -> Result<Self, DtbError> {
        let mut b = Builder {
            tree: Tree {
                nodes: Vec::new(),
                reservations: Vec::new(),
            },
            open: Vec::new(),
        };
        crate::dtb::walk(blob, &mut b)?;
        Ok(b.tree)
    }

    /// The root (the check makes sure there is one).
    pub fn root(&self) -> &Node<'a> {
        &self.nodes[0]
    }

    /// The node at `path`, written in full (unit addresses included).
    pub fn get(&self, path: &str) -> Option<&Node<'a>> {
        self.nodes.iter().find(|n| n.path == path)
    }

    pub fn by_phandle(&self, ph: u32) -> Option<&Node<'a>> {
        self.nodes.iter().find(|n| n.phandle == Some(ph))
    }

    /// The children of the node at `parent`, in order.
    pub fn children_of<'s>(&'s self, parent: &str) -> impl Iterator<Item = &'s Node<'a>> + 's {
        let p = self.nodes.iter().position(|n| n.path == parent);
        self.nodes
            .iter()
            .filter(move |n| p.is_some() && n.parent == p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let dts = r#"/dts-v1/;
/memreserve/ 0x1000 0x2000;
/ {
    #address-cells = <1>;
    #size-cells = <1>;
    bus {
        #address-cells = <2>;
        #size-cells = <2>;
        uart@9000000 { compatible = "x,y", "arm,pl011"; reg = <0 0x9000000 0 0x1000>; phandle = <7>; };
    };
    clk { linux,phandle = <8>; reg = <1 2>; };
};
"#;
        let out = std::process::Command::new("dtc")
            .args(["-q", "-I", "dts", "-O", "dtb"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(dts.as_bytes())?;
                c.wait_with_output()
            })
            .expect("dtc");
        assert!(out.status.success());
        out.stdout
    }

    #[test]
    fn reads_paths_cells_phandles_and_reservations() {
        let blob = sample();
        let t = Tree::new(&blob).unwrap();
        let paths: Vec<&str> = t.nodes.iter().map(|n| n.path.as_str()).collect();
        assert_eq!(paths, ["/", "/bus", "/bus/uart@9000000", "/clk"]);
        let uart = t.get("/bus/uart@9000000").unwrap();
        assert_eq!((uart.addr_cells, uart.size_cells), (2, 2));
        assert_eq!(uart.phandle, Some(7));
        assert!(uart.is_compatible("arm,pl011"));
        assert!(!uart.is_compatible("arm"));
        assert_eq!(uart.property("reg").map(<[u8]>::len), Some(16));
        let clk = t.by_phandle(8).unwrap();
        assert_eq!(
            (clk.path.as_str(), clk.addr_cells, clk.size_cells),
            ("/clk", 1, 1)
        );
        let kids: Vec<&str> = t.children_of("/").map(|n| n.name()).collect();
        assert_eq!(kids, ["bus", "clk"]);
        assert_eq!(t.children_of("/nowhere").count(), 0);
        assert_eq!(t.reservations, [(0x1000, 0x2000)]);
    }

    #[test]
    fn a_bad_blob_is_refused_as_the_check_refuses_it() {
        let mut blob = sample();
        blob[0] = 0;
        assert_eq!(
            Tree::new(&blob).unwrap_err(),
            crate::dtb::check(&blob).unwrap_err()
        );
    }
}
