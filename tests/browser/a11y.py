"""Accessibility checks evaluated inside a page: labels, headings, contrast, focus.

Each returns a list of human-readable problems (empty = pass), so a failing
assertion names the offending elements. test_a11y_checks.py shows each one
passing a good page and catching a bad one.
"""

from __future__ import annotations

_DESCRIBE_JS = """
el => {
  const tag = el.tagName.toLowerCase();
  const id = el.id ? '#' + el.id : '';
  const name = el.getAttribute('name') ? `[name=${el.getAttribute('name')}]` : '';
  const text = (el.innerText || el.value || '').trim().replace(/\\s+/g, ' ').slice(0, 40);
  return `<${tag}${id}${name}>` + (text ? ` "${text}"` : '');
}
"""

_UNLABELLED_JS = f"""
() => {{
  const describe = {_DESCRIBE_JS};
  const skip = new Set(['hidden', 'submit', 'button', 'reset', 'image']);
  const problems = [];
  for (const el of document.querySelectorAll('input, select, textarea')) {{
    if (el.tagName === 'INPUT' && skip.has((el.getAttribute('type') || 'text').toLowerCase()))
      continue;
    const byFor = el.id && [...document.querySelectorAll('label[for]')]
      .some(l => l.htmlFor === el.id && l.textContent.trim());
    const wrapped = el.closest('label') && el.closest('label').textContent.trim();
    const aria = (el.getAttribute('aria-label') || '').trim();
    const labelledBy = (el.getAttribute('aria-labelledby') || '').split(/\\s+/)
      .some(id => id && document.getElementById(id)
                  && document.getElementById(id).textContent.trim());
    if (!(byFor || wrapped || aria || labelledBy)) problems.push(describe(el) + ' has no label');
  }}
  return problems;
}}
"""

_HEADINGS_JS = """
() => {
  const heads = [...document.querySelectorAll('h1, h2, h3, h4, h5, h6')];
  const problems = [];
  const h1s = heads.filter(h => h.tagName === 'H1').length;
  if (h1s !== 1) problems.push(`expected exactly one <h1>, found ${h1s}`);
  let previous = 0;
  for (const h of heads) {
    const level = Number(h.tagName[1]);
    if (level > previous + 1) {
      const text = h.textContent.trim().slice(0, 40);
      problems.push(`<h${level}> "${text}" follows <h${previous || 'none'}> (skipped level)`);
    }
    previous = level;
  }
  return problems;
}
"""

_CONTRAST_JS = f"""
minimum => {{
  const describe = {_DESCRIBE_JS};
  const parse = c => {{
    const m = c.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return {{r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1}};
  }};
  const over = (top, bottom) => ({{
    r: top.r * top.a + bottom.r * (1 - top.a),
    g: top.g * top.a + bottom.g * (1 - top.a),
    b: top.b * top.a + bottom.b * (1 - top.a), a: 1,
  }});
  // The background behind `el`: its own and its ancestors' colours, blended
  // from the first opaque one down, over white (the canvas).
  const background = el => {{
    const layers = [];
    for (let node = el; node && node.nodeType === 1; node = node.parentElement) {{
      const style = getComputedStyle(node);
      if (style.backgroundImage !== 'none') return null;  // image/gradient: unknown
      const c = parse(style.backgroundColor);
      if (c && c.a > 0) {{ layers.push(c); if (c.a >= 1) break; }}
    }}
    let colour = {{r: 255, g: 255, b: 255, a: 1}};
    for (const layer of layers.reverse()) colour = over(layer, colour);
    return colour;
  }};
  const luminance = c => {{
    const lin = v => {{
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    }};
    return 0.2126 * lin(c.r) + 0.7152 * lin(c.g) + 0.0722 * lin(c.b);
  }};
  const problems = [];
  for (const el of document.body.querySelectorAll('*')) {{
    const hasText = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    if (!hasText) continue;
    const style = getComputedStyle(el);
    const box = el.getBoundingClientRect();
    if (style.visibility !== 'visible' || style.display === 'none' || box.width === 0
        || box.height === 0 || Number(style.opacity) === 0) continue;
    const bg = background(el);
    const fg = parse(style.color);
    if (!bg || !fg) continue;
    const text = over(fg, bg);
    const [hi, lo] = [luminance(text), luminance(bg)].sort((x, y) => y - x);
    const ratio = (hi + 0.05) / (lo + 0.05);
    if (ratio < minimum)
      problems.push(`${{describe(el)}} contrast ${{ratio.toFixed(2)}}:1 < ${{minimum}}:1 `
                    + `(${{style.color}} on rgb(${{bg.r|0}}, ${{bg.g|0}}, ${{bg.b|0}}))`);
  }}
  return problems;
}}
"""

_FOCUSABLE = (
    "a[href], button:not([disabled]), input:not([type=hidden]):not([disabled]), "
    "select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex='-1'])"
)

# The computed properties a focus indicator can show through; an outline only
# counts when it is actually drawn (style not none, width above zero).
_FOCUS_LOOK_JS = """
el => {
  const s = getComputedStyle(el);
  const outline = s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0
    ? `${s.outlineStyle} ${s.outlineWidth} ${s.outlineColor}` : 'none';
  // Position and clipping too: a skip link shows itself by moving on screen.
  return JSON.stringify([outline, s.boxShadow, s.borderColor, s.backgroundColor, s.color,
                         s.textDecorationLine, s.top, s.left, s.transform, s.clipPath, s.clip]);
}
"""


def unlabelled_inputs(page) -> list[str]:
    """Inputs, selects and textareas (not hidden/buttons) with no label[for],
    wrapping label, aria-label or aria-labelledby."""
    return page.evaluate(_UNLABELLED_JS)


def heading_problems(page) -> list[str]:
    """Not exactly one h1, or a heading that skips a level (h2 then h4)."""
    return page.evaluate(_HEADINGS_JS)


def contrast_problems(page, minimum: float = 4.5) -> list[str]:
    """Visible text whose WCAG contrast against its effective background is too low."""
    return page.evaluate(_CONTRAST_JS, minimum)


def focus_problems(page, *, max_tabs: int = 40) -> list[str]:
    """Tab through the page's controls with the keyboard; each one that gets
    focus must look different from its unfocused self (outline, shadow, colours)."""
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    looks = page.evaluate(
        f"""selector => [...document.querySelectorAll(selector)].map((el, i) => {{
              el.setAttribute('data-a11y-index', i);
              return ({_FOCUS_LOOK_JS})(el);
            }})""",
        _FOCUSABLE,
    )
    if not looks:
        return []
    problems, seen = [], set()
    for _ in range(min(len(looks), max_tabs)):
        page.keyboard.press("Tab")
        page.wait_for_timeout(30)  # let a short focus transition settle
        focused = page.evaluate(
            f"""() => {{
              const el = document.activeElement;
              if (!el || !el.hasAttribute('data-a11y-index')) return null;
              return [Number(el.getAttribute('data-a11y-index')), ({_FOCUS_LOOK_JS})(el),
                      ({_DESCRIBE_JS})(el)];
            }}"""
        )
        if focused is None:
            continue
        index, look, description = focused
        if index in seen:
            break  # wrapped around
        seen.add(index)
        if look == looks[index]:
            problems.append(f"{description} looks the same focused and unfocused")
    if not seen:
        problems.append("Tab moved focus to none of the page's controls")
    return problems


def accessibility_problems(page) -> list[str]:
    """All four checks on the current page, each problem prefixed by its page."""
    url = page.url
    checks = {
        "label": unlabelled_inputs,
        "headings": heading_problems,
        "contrast": contrast_problems,
        "focus": focus_problems,
    }
    return [
        f"{url} [{name}] {problem}" for name, check in checks.items() for problem in check(page)
    ]
