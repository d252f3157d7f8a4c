//! The tiled layout: panes the user can move, split, tab, resize, show and hide (egui_tiles),
//! saved with the app's state.

use egui_tiles::{Tile, TileId, Tiles, Tree};

use super::views::{pane_ui, Pane, ViewCx};

/// Depth attention and token x source stacked on the left, the other views as tabs on the right.
pub fn default_layout() -> Tree<Pane> {
    let mut tiles = Tiles::default();
    let depth = tiles.insert_pane(Pane::DepthAttention);
    let token_source = tiles.insert_pane(Pane::TokenSource);
    let left = tiles.insert_vertical_tile(vec![depth, token_source]);
    if let Some(egui_tiles::Tile::Container(egui_tiles::Container::Linear(l))) = tiles.get_mut(left)
    {
        // Depth attention has a row per op: give it the larger part.
        l.shares.set_share(depth, 3.0);
        l.shares.set_share(token_source, 2.0);
    }
    let right_panes = [
        Pane::Norms,
        Pane::Gradients,
        Pane::Difference,
        Pane::Training,
    ]
    .map(|p| tiles.insert_pane(p));
    let right = tiles.insert_tab_tile(right_panes.to_vec());
    let root = tiles.insert_horizontal_tile(vec![left, right]);
    Tree::new(egui::Id::unique("depthlens_layout"), root, tiles)
}

fn tile_of(tree: &Tree<Pane>, pane: Pane) -> Option<TileId> {
    tree.tiles.find_pane(&pane)
}

pub fn is_shown(tree: &Tree<Pane>, pane: Pane) -> bool {
    tile_of(tree, pane).is_some_and(|id| tree.is_visible(id))
}

/// Show or hide a pane; a pane missing from a saved layout is added to the root.
pub fn set_shown(tree: &mut Tree<Pane>, pane: Pane, shown: bool) {
    match tile_of(tree, pane) {
        Some(id) => tree.set_visible(id, shown),
        None if shown => {
            let id = tree.tiles.insert_pane(pane);
            match tree.root().and_then(|r| tree.tiles.get_mut(r)) {
                Some(Tile::Container(c)) => c.add_child(id),
                _ => *tree = default_layout(),
            }
        }
        None => {}
    }
}

/// A saved layout is used when it holds every pane (else a pane could be unreachable).
pub fn usable(tree: &Tree<Pane>) -> bool {
    tree.root().is_some() && Pane::ALL.iter().all(|p| tile_of(tree, *p).is_some())
}

pub struct Behavior<'a, 'b> {
    pub cx: &'a mut ViewCx<'b>,
}

impl egui_tiles::Behavior<Pane> for Behavior<'_, '_> {
    fn pane_ui(
        &mut self,
        ui: &mut egui::Ui,
        _tile_id: TileId,
        pane: &mut Pane,
    ) -> egui_tiles::UiResponse {
        let frame = egui::Frame::new().inner_margin(6.0);
        frame.show(ui, |ui| {
            ui.push_id(pane.title(), |ui| pane_ui(*pane, ui, self.cx));
        });
        egui_tiles::UiResponse::None
    }

    fn tab_title_for_pane(&mut self, pane: &Pane) -> egui::WidgetText {
        pane.title().into()
    }

    fn simplification_options(&self) -> egui_tiles::SimplificationOptions {
        egui_tiles::SimplificationOptions {
            all_panes_must_have_tabs: true,
            ..Default::default()
        }
    }
}
