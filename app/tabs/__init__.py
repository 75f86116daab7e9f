"""The five tabs of the studio, one module each, whose draw(ui, st, main, panel) reads top to
bottom like the panel it draws."""
