// relist match history page. Plain JS, no build step. Every piece of data is put in the
// page with textContent / attributes, never as HTML.
'use strict';

(function () {
  const $ = (sel, root) => (root || document).querySelector(sel);

  // el('div', {class: 'x', href: '#'}, child, 'text', ...): builds DOM; strings become text.
  function el(tag, attrs, ...children) {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') n.className = v;
      else if (k === 'text') n.textContent = v;
      else if (k.startsWith('on')) n.addEventListener(k.slice(2), v);
      else if (k === 'dataset') Object.assign(n.dataset, v);
      else n.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      n.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return n;
  }

  // The API key, once the daemon asked for one: typed into the sign-in form, kept for this
  // tab only (sessionStorage) and as a session cookie, which the thumbnails' <img> requests
  // carry.
  const KEY = 'relist_key';
  function saveKey(k) {
    sessionStorage.setItem(KEY, k);
    document.cookie = KEY + '=' + encodeURIComponent(k) + '; path=/; SameSite=Strict';
  }
  function forgetKey() {
    sessionStorage.removeItem(KEY);
    document.cookie = KEY + '=; path=/; SameSite=Strict; Max-Age=0';
  }

  // Raised when the daemon wants a (better) key: the sign-in form is shown instead.
  class NeedsKey extends Error {}

  async function request(path, opts, key) {
    const o = Object.assign({}, opts || {});
    o.headers = Object.assign({ Accept: 'application/json' }, o.headers || {});
    if (key) o.headers.Authorization = 'Bearer ' + key;
    const r = await fetch(path, o);
    let body = null;
    try { body = await r.json(); } catch (_) { body = null; }
    return { r: r, body: body };
  }

  function errorText(r, body) {
    return body && body.error ? (typeof body.error === 'string' ? body.error : body.error.message) : 'HTTP ' + r.status;
  }

  async function api(path, opts) {
    const key = sessionStorage.getItem(KEY);
    const { r, body } = await request(path, opts, key);
    if (r.status === 401) {
      showLogin(key ? 'Your key was refused (' + errorText(r, body) + '). Sign in again.' : '');
      throw new NeedsKey('sign in first');
    }
    if (!r.ok) {
      const e = new Error(errorText(r, body));
      e.status = r.status;
      throw e;
    }
    return body;
  }

  // ---- sign-in ----------------------------------------------------------------------------
  function showLogin(message) {
    if (sessionStorage.getItem(KEY)) forgetKey();
    document.body.classList.add('locked');
    $('#login-view').hidden = false;
    $('#logout').hidden = true;
    const st = $('#login-status');
    st.textContent = message || '';
    st.className = 'status' + (message ? ' bad' : '');
    $('#login-key').focus();
  }

  function hideLogin() {
    document.body.classList.remove('locked');
    $('#login-view').hidden = true;
    $('#logout').hidden = !sessionStorage.getItem(KEY);
  }

  async function signIn(e) {
    e.preventDefault();
    const input = $('#login-key');
    const key = input.value.trim();
    const st = $('#login-status');
    if (!key) return;
    const button = $('#login-submit');
    button.disabled = true;
    st.textContent = 'Checking the key…';
    st.className = 'status';
    try {
      // Any history read tells whether the key may use this page.
      const { r, body } = await request('/api/stats?top=1', {}, key);
      if (r.status === 401) {
        st.textContent = 'Wrong API key: relist does not know it (or it was revoked).';
        st.className = 'status bad';
        input.select();
        return;
      }
      if (r.status === 403) {
        st.textContent = 'This key may not read the match history: ' + errorText(r, body);
        st.className = 'status bad';
        input.select();
        return;
      }
      if (!r.ok) {
        st.textContent = 'Cannot sign in: ' + errorText(r, body);
        st.className = 'status bad';
        return;
      }
      saveKey(key);
      input.value = '';
      st.textContent = '';
      hideLogin();
      list.key = null;
      loadStats();
      route();
    } catch (err) {
      st.textContent = 'Cannot reach relist: ' + err.message;
      st.className = 'status bad';
    } finally {
      button.disabled = false;
    }
  }

  function logout() {
    forgetKey();
    $('#stats').replaceChildren();
    $('#matches tbody').replaceChildren();
    showLogin('Signed out.');
    $('#login-status').className = 'status';
  }

  function pad(n) { return String(n).padStart(2, '0'); }
  function fmtTime(ms) {
    const d = new Date(ms);
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' +
      pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
  }
  function toLocalInput(ms) {
    const d = new Date(ms);
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + 'T' +
      pad(d.getHours()) + ':' + pad(d.getMinutes());
  }
  function fmtScore(s) { return typeof s === 'number' ? s.toFixed(3) : ''; }

  function badge(kind, value) {
    return el('span', { class: 'badge ' + kind + '-' + String(value).toLowerCase() }, String(value).replace('_', ' '));
  }

  // A thumbnail, or a placeholder when the daemon kept none.
  function thumb(url, alt) {
    const box = el('span', { class: 'thumb' });
    const img = el('img', { src: url, alt: alt, loading: 'lazy', width: 160, height: 120 });
    img.addEventListener('error', () => {
      box.replaceChildren(el('span', { class: 'placeholder', title: alt }, 'no image'));
    });
    box.append(img);
    return box;
  }
  const matchThumb = (id, i) => thumb('/api/thumbs/match/' + id + '/' + i + '.jpg', 'candidate image ' + i);
  const takedownThumb = (id, j) => thumb('/api/thumbs/takedown/' + id + '/' + j + '.jpg', 'takedown ' + id + ' image ' + j);

  function evidenceText(e) {
    return e.kind + ' ' + e.distance + (e.transform && e.transform !== 'identity' ? ' · ' + e.transform : '');
  }

  let toastTimer = null;
  function toast(msg, bad) {
    const t = $('#toast');
    t.textContent = msg;
    t.className = 'toast' + (bad ? ' bad' : '');
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.hidden = true; }, 4000);
  }

  function show(id) {
    for (const v of ['list-view', 'match-view', 'takedown-view']) $('#' + v).hidden = v !== id;
  }

  // ---- statistics strip -------------------------------------------------------------------
  async function loadStats() {
    const box = $('#stats');
    try {
      const s = (await api('/api/stats?top=5')).stats;
      const parts = [el('span', { class: 'stat' }, el('b', {}, String(s.total)), ' matches in the last 30 days')];
      for (const [v, n] of s.per_verdict) parts.push(el('span', { class: 'stat' }, badge('verdict', v), ' ' + n));
      if (s.top_takedowns.length) {
        parts.push(el('span', { class: 'stat' }, 'most re-listed: ',
          s.top_takedowns.map(([id, n], i) => [i ? ', ' : '', el('a', { href: '#/takedown/' + id }, '#' + id), ' (' + n + ')'])));
      }
      box.replaceChildren(...parts);
    } catch (e) {
      if (e instanceof NeedsKey) { box.replaceChildren(); return; }
      box.replaceChildren(el('span', { class: 'stat bad' }, 'statistics unavailable: ' + e.message));
    }
  }

  // ---- list view --------------------------------------------------------------------------
  const FILTERS = ['from', 'to', 'takedown', 'marketplace', 'seller', 'verdict', 'min_score', 'label', 'source', 'page_size'];
  const list = { key: null, tokens: [null], page: 0, next: null, records: [] };
  let lastListHash = '#/';

  function filtersFromForm() {
    const f = $('#filters');
    const p = new URLSearchParams();
    for (const name of FILTERS) {
      const input = f.elements[name];
      let v = input.value.trim();
      if (!v) continue;
      if (name === 'from' || name === 'to') {
        const ms = new Date(v).getTime();
        if (Number.isNaN(ms)) continue;
        v = String(ms);
      }
      if (name === 'page_size' && v === '50') continue;
      p.set(name, v);
    }
    return p;
  }

  function formFromFilters(p) {
    const f = $('#filters');
    for (const name of FILTERS) {
      let v = p.get(name) || '';
      if ((name === 'from' || name === 'to') && v) v = toLocalInput(Number(v));
      if (name === 'page_size' && !v) v = '50';
      f.elements[name].value = v;
    }
  }

  async function showList(params) {
    show('list-view');
    formFromFilters(params);
    const key = params.toString();
    if (list.key !== key) {
      list.key = key;
      list.tokens = [null];
      list.page = 0;
    }
    lastListHash = '#/' + (key ? '?' + key : '');
    await loadPage(params);
  }

  async function loadPage(params) {
    const p = new URLSearchParams(params);
    const token = list.tokens[list.page];
    if (token) p.set('page_token', token);
    const status = $('#list-status');
    status.textContent = 'Loading…';
    status.className = 'status';
    const body = $('#matches tbody');
    let page;
    try {
      page = await api('/api/matches?' + p.toString());
    } catch (e) {
      status.textContent = e instanceof NeedsKey ? '' : 'Cannot load matches: ' + e.message;
      status.className = 'status bad';
      body.replaceChildren();
      list.records = [];
      selectionChanged();
      return;
    }
    list.next = page.next_page_token || null;
    list.records = page.records;
    body.replaceChildren(...page.records.map(matchRow));
    $('#select-all').checked = false;
    selectionChanged();
    const n = page.records.length;
    status.textContent = n === 0
      ? (list.page === 0 ? 'No matches for these filters.' : 'No more matches.')
      : n + (n === 1 ? ' match' : ' matches') + ' on this page' + (list.next ? '; older ones follow.' : '.');
    $('#prev').disabled = list.page === 0;
    $('#next').disabled = !list.next;
    $('#page-no').textContent = 'page ' + (list.page + 1);
  }

  function matchRow(v) {
    const top = v.matches[0] || null;
    const ev = top && top.images.length ? top.images[0] : null;
    const ci = ev ? ev.candidate_image_index : 0;
    const sj = ev ? ev.stored_image_index : 0;
    const evidence = [];
    if (top) {
      for (const e of top.images.slice(0, 2)) evidence.push(el('div', {}, evidenceText(e)));
      if (top.images.length > 2) evidence.push(el('div', { class: 'muted' }, '+' + (top.images.length - 2) + ' more'));
      if (top.text_distance !== null && top.text_distance !== undefined) evidence.push(el('div', {}, 'title ' + top.text_distance));
      if (top.same_seller) evidence.push(el('div', { class: 'flag' }, 'same seller'));
    }
    const href = '#/match/' + v.match_id;
    const candId = v.candidate.marketplace + ' / ' + v.candidate.listing_id;
    const tdId = top ? top.marketplace + ' / ' + top.listing_id : '';
    const tr = el('tr', { dataset: { matchId: String(v.match_id) } },
      el('td', { class: 'sel' }, el('input', {
        type: 'checkbox', class: 'pick', 'aria-label': 'select match ' + v.match_id,
        dataset: { matchId: String(v.match_id) }, onchange: selectionChanged,
      })),
      el('td', { class: 'when', 'data-h': 'When' }, fmtTime(v.at_ms), el('div', { class: 'muted' }, v.source)),
      el('td', { class: 'cand', 'data-h': 'Candidate' },
        el('div', { class: 'strong id', title: candId }, candId),
        v.candidate.seller_id ? el('div', { class: 'muted id', title: 'seller ' + v.candidate.seller_id }, 'seller ' + v.candidate.seller_id) : null,
        v.candidate.title ? el('div', { class: 'title' }, v.candidate.title) : null),
      el('td', { class: 'pair', 'data-h': 'Images' },
        el('div', { class: 'pair-imgs' }, matchThumb(v.match_id, ci), top ? takedownThumb(top.takedown_id, sj) : null)),
      el('td', { class: 'tdcol', 'data-h': 'Takedown' }, top
        ? [el('a', { href: '#/takedown/' + top.takedown_id, title: 'timeline of this takedown' }, '#' + top.takedown_id),
          el('div', { class: 'muted id', title: tdId }, tdId),
          v.matches.length > 1 ? el('div', { class: 'muted' }, '+' + (v.matches.length - 1) + ' other takedowns') : null]
        : '—'),
      el('td', { class: 'evidence', 'data-h': 'Evidence' }, evidence),
      el('td', { 'data-h': 'Verdict' }, badge('verdict', v.verdict)),
      el('td', { class: 'num', 'data-h': 'Score' }, fmtScore(v.score)),
      el('td', { 'data-h': 'Label' }, badge('label', v.label)),
      el('td', { class: 'act' }, el('a', { class: 'open button', href: href }, 'Open')));
    tr.addEventListener('click', (e) => {
      if (e.target.closest('a, button, input, td.sel')) return;
      location.hash = href;
    });
    return tr;
  }

  // ---- bulk review and CSV of what is shown ---------------------------------------------
  function picked() {
    return [...document.querySelectorAll('#matches tbody input.pick:checked')].map((c) => c.dataset.matchId);
  }

  function selectionChanged() {
    const n = picked().length;
    const all = document.querySelectorAll('#matches tbody input.pick').length;
    $('#bulk-count').textContent = n === 0 ? 'none selected' : n + ' of ' + all + ' selected';
    $('#bulk-apply').disabled = n === 0;
    $('#select-all').checked = n > 0 && n === all;
    $('#select-all').indeterminate = n > 0 && n < all;
  }

  function selectAll(e) {
    for (const c of document.querySelectorAll('#matches tbody input.pick')) c.checked = e.target.checked;
    selectionChanged();
  }

  // Labels every selected match, one review request each (the same endpoint as the match
  // page), in order; stops at the first refusal and says how far it got.
  async function bulkReview() {
    const ids = picked();
    const label = $('#bulk-label').value;
    const reviewer = $('#bulk-reviewer').value.trim();
    const out = $('#bulk-status');
    if (!reviewer) {
      out.textContent = 'Enter your name first.';
      out.className = 'status bad';
      $('#bulk-reviewer').focus();
      return;
    }
    localStorage.setItem('relist.reviewer', reviewer);
    $('#bulk-apply').disabled = true;
    let done = 0;
    try {
      for (const id of ids) {
        out.textContent = 'Labelling ' + (done + 1) + ' of ' + ids.length + '…';
        out.className = 'status';
        await api('/api/matches/' + id + '/review', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
          body: JSON.stringify({ label: label, reviewer: reviewer, note: 'bulk review of the filtered list' }),
        });
        done += 1;
      }
      out.textContent = done + (done === 1 ? ' match' : ' matches') + ' labelled ' + label.replace('_', ' ') + '.';
      out.className = 'status';
    } catch (e) {
      out.textContent = 'Stopped after ' + done + ' of ' + ids.length + ': ' + e.message;
      out.className = 'status bad';
    }
    await loadPage(new URLSearchParams(list.key));
  }

  // A CSV cell: quoted when needed; a leading = + - @ is defused so a spreadsheet shows it
  // as text rather than running it as a formula.
  function csvCell(v) {
    let s = v === null || v === undefined ? '' : String(v);
    if (/^[=+\-@\t\r]/.test(s)) s = "'" + s;
    return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  const CSV_COLUMNS = ['match_id', 'at', 'source', 'verdict', 'score', 'label', 'marketplace', 'listing_id',
    'seller_id', 'title', 'takedown_id', 'takedown_marketplace', 'takedown_listing_id', 'evidence', 'other_takedowns'];

  function csvOf(records) {
    const rows = [CSV_COLUMNS];
    for (const v of records) {
      const top = v.matches[0] || null;
      rows.push([v.match_id, new Date(v.at_ms).toISOString(), v.source, v.verdict, fmtScore(v.score), v.label,
        v.candidate.marketplace, v.candidate.listing_id, v.candidate.seller_id, v.candidate.title,
        top ? top.takedown_id : '', top ? top.marketplace : '', top ? top.listing_id : '',
        top ? top.images.map(evidenceText).join('; ') : '',
        v.matches.slice(1).map((m) => m.takedown_id).join(' ')]);
    }
    return rows.map((r) => r.map(csvCell).join(',')).join('\r\n') + '\r\n';
  }

  function downloadCsv() {
    const blob = new Blob([csvOf(list.records)], { type: 'text/csv;charset=utf-8' });
    const url = URL.createObjectURL(blob);
    const a = el('a', { href: url, download: 'relist-matches-page' + (list.page + 1) + '.csv' });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  // ---- match view -------------------------------------------------------------------------
  async function showMatch(id) {
    show('match-view');
    const box = $('#match-view');
    box.replaceChildren(el('p', { class: 'status' }, 'Loading match ' + id + '…'));
    try {
      renderMatch(await api('/api/matches/' + encodeURIComponent(id)));
    } catch (e) {
      if (e instanceof NeedsKey) { box.replaceChildren(); return; }
      box.replaceChildren(backLink(), el('p', { class: 'status bad' }, 'Cannot load match ' + id + ': ' + e.message));
    }
  }

  function backLink() {
    return el('a', { class: 'back', href: lastListHash }, '← Back to matches');
  }

  function renderMatch(v) {
    const box = $('#match-view');
    const c = v.candidate;
    const head = el('div', { class: 'detail-head' },
      el('h1', {}, 'Match ' + v.match_id),
      badge('verdict', v.verdict),
      el('span', { class: 'score' }, 'score ' + fmtScore(v.score)),
      el('span', { id: 'match-label' }, badge('label', v.label)));
    const cand = el('section', { class: 'card' },
      el('h2', {}, 'Candidate listing'),
      el('dl', { class: 'kv' },
        el('dt', {}, 'Checked'), el('dd', {}, fmtTime(v.at_ms) + ' (' + v.source + ')'),
        el('dt', {}, 'Listing'), el('dd', {}, c.marketplace + ' / ' + c.listing_id),
        el('dt', {}, 'Seller'), el('dd', {}, c.seller_id || '—'),
        el('dt', {}, 'Title'), el('dd', {}, c.title || '—'),
        c.description ? [el('dt', {}, 'Description'), el('dd', { class: 'desc' }, c.description)] : null));
    const matched = v.matches.map((m) => {
      const rows = m.images.length
        ? m.images.map((e) => el('div', { class: 'ev-row' },
          el('figure', {}, matchThumb(v.match_id, e.candidate_image_index), el('figcaption', {}, 'candidate image ' + e.candidate_image_index)),
          el('figure', {}, takedownThumb(m.takedown_id, e.stored_image_index), el('figcaption', {}, 'taken-down image ' + e.stored_image_index)),
          el('dl', { class: 'kv ev' },
            el('dt', {}, 'Hash'), el('dd', {}, e.kind),
            el('dt', {}, 'Hamming distance'), el('dd', {}, String(e.distance)),
            el('dt', {}, 'Rotation/flip'), el('dd', {}, e.transform || '—'))))
        : [el('div', { class: 'ev-row' },
          el('figure', {}, matchThumb(v.match_id, 0), el('figcaption', {}, 'candidate image 0')),
          el('figure', {}, takedownThumb(m.takedown_id, 0), el('figcaption', {}, 'taken-down image 0')),
          el('p', { class: 'muted' }, 'No image evidence: matched on the title.'))];
      return el('section', { class: 'card' },
        el('h2', {}, 'Takedown ', el('a', { href: '#/takedown/' + m.takedown_id }, '#' + m.takedown_id),
          ' · ' + m.marketplace + ' / ' + m.listing_id),
        el('div', { class: 'chips' },
          badge('verdict', m.verdict),
          el('span', { class: 'chip' }, 'score ' + fmtScore(m.score)),
          el('span', { class: 'chip' }, 'seller ' + (m.seller_id || '—')),
          m.text_distance !== null && m.text_distance !== undefined ? el('span', { class: 'chip' }, 'title distance ' + m.text_distance) : null,
          m.same_seller ? el('span', { class: 'chip flag' }, 'same seller') : null,
          el('a', { class: 'chip link', href: '#/takedown/' + m.takedown_id }, 'timeline →')),
        rows);
    });
    box.replaceChildren(backLink(), head, el('div', { class: 'detail-grid' },
      el('div', {}, cand, matched), reviewPanel(v)));
  }

  function reviewPanel(v) {
    const reviewer = el('input', { id: 'reviewer', type: 'text', maxlength: 256, required: true, placeholder: 'your name' });
    reviewer.value = localStorage.getItem('relist.reviewer') || '';
    const note = el('textarea', { id: 'note', rows: 3, maxlength: 2000, placeholder: 'optional note' });
    const out = el('p', { class: 'status', id: 'review-status', role: 'status' });
    const send = async (label, btn) => {
      const name = reviewer.value.trim();
      if (!name) {
        out.textContent = 'Enter your name first.';
        out.className = 'status bad';
        reviewer.focus();
        return;
      }
      localStorage.setItem('relist.reviewer', name);
      for (const b of panel.querySelectorAll('button')) b.disabled = true;
      out.textContent = 'Saving…';
      out.className = 'status';
      try {
        const updated = await api('/api/matches/' + v.match_id + '/review', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
          body: JSON.stringify({ label: label, reviewer: name, note: note.value }),
        });
        list.key = null; // labels changed: reload the list when going back
        renderMatch(updated);
        toast('Match ' + v.match_id + ' labelled ' + label.replace('_', ' '));
      } catch (e) {
        out.textContent = 'Not saved: ' + e.message;
        out.className = 'status bad';
        btn.disabled = false;
        for (const b of panel.querySelectorAll('button')) b.disabled = false;
      }
    };
    const button = (label, text, cls) => {
      const b = el('button', { type: 'button', class: cls, dataset: { label: label } }, text);
      b.addEventListener('click', () => send(label, b));
      return b;
    };
    const history = v.reviews.length
      ? el('ol', { class: 'reviews' }, v.reviews.slice().reverse().map((r) => el('li', {},
        badge('label', r.label), ' by ', el('b', {}, r.reviewer), ' · ' + fmtTime(r.at_ms),
        r.note ? el('div', { class: 'note' }, r.note) : null)))
      : el('p', { class: 'muted' }, 'Not reviewed yet.');
    const panel = el('aside', { class: 'card review' },
      el('h2', {}, 'Review'),
      el('label', {}, 'Reviewer', reviewer),
      el('label', {}, 'Note', note),
      el('div', { class: 'review-buttons' },
        button('CONFIRMED', 'Confirmed re-upload', 'confirm'),
        button('FALSE_POSITIVE', 'False positive', 'reject'),
        button('UNREVIEWED', 'Undo (unreviewed)', 'undo')),
      out,
      el('h3', {}, 'History'),
      history);
    return panel;
  }

  // ---- takedown timeline ------------------------------------------------------------------
  async function showTakedown(id) {
    show('takedown-view');
    const box = $('#takedown-view');
    box.replaceChildren(el('p', { class: 'status' }, 'Loading takedown ' + id + '…'));
    try {
      renderTakedown(await api('/api/takedowns/' + encodeURIComponent(id)));
    } catch (e) {
      if (e instanceof NeedsKey) { box.replaceChildren(); return; }
      box.replaceChildren(backLink(), el('p', { class: 'status bad' }, 'Cannot load takedown ' + id + ': ' + e.message));
    }
  }

  function dayBars(perDay) {
    if (!perDay.length) return el('p', { class: 'muted' }, 'No re-listings recorded.');
    // Whole days between the first and the last, zeros included, unless that is too many.
    const DAY = 86400000;
    const t0 = Date.parse(perDay[0][0] + 'T00:00:00Z');
    const t1 = Date.parse(perDay[perDay.length - 1][0] + 'T00:00:00Z');
    let days = perDay;
    if ((t1 - t0) / DAY <= 120) {
      const counts = new Map(perDay);
      days = [];
      for (let t = t0; t <= t1; t += DAY) {
        const d = new Date(t).toISOString().slice(0, 10);
        days.push([d, counts.get(d) || 0]);
      }
    }
    const max = Math.max(...days.map((d) => d[1]), 1);
    return el('div', { class: 'bars', role: 'img', 'aria-label': 'matches per day' },
      days.map(([d, n]) => el('div', { class: 'bar', title: d + ': ' + n + (n === 1 ? ' match' : ' matches') },
        el('span', { class: 'n' }, n ? String(n) : ''),
        el('span', { class: 'fill', style: null, dataset: { h: String(Math.round(100 * n / max)) } }),
        el('span', { class: 'd' }, d.slice(5)))));
  }

  function renderTakedown(t) {
    const box = $('#takedown-view');
    const td = t.takedown;
    const l = td.listing;
    const imgs = [];
    for (let j = 0; j < t.images; j++) {
      imgs.push(el('figure', {}, takedownThumb(td.id, j), el('figcaption', {}, 'image ' + j)));
    }
    const info = el('section', { class: 'card' },
      el('div', { class: 'detail-head' },
        el('h1', {}, 'Takedown #' + td.id),
        td.removed_at_ms ? el('span', { class: 'badge removed' }, 'removed ' + fmtTime(td.removed_at_ms)) : null),
      el('div', { class: 'td-info' },
        el('div', { class: 'td-imgs' }, imgs.length ? imgs : el('p', { class: 'muted' }, 'No images.')),
        el('dl', { class: 'kv' },
          el('dt', {}, 'Listing'), el('dd', {}, l.marketplace + ' / ' + l.listing_id),
          el('dt', {}, 'Seller'), el('dd', {}, l.seller_id || '—'),
          el('dt', {}, 'Title'), el('dd', {}, l.title || '—'),
          el('dt', {}, 'Reason'), el('dd', {}, td.reason || '—'),
          el('dt', {}, 'Taken down'), el('dd', {}, fmtTime(td.taken_down_at_ms)),
          el('dt', {}, 'Re-listings'), el('dd', {}, String(t.matches.length) + (t.truncated ? '+ (newest shown)' : '')))),
      el('a', { class: 'button', href: '#/?takedown=' + td.id }, 'Filter the match list by this takedown'));
    const chart = el('section', { class: 'card' }, el('h2', {}, 'Re-listings per day (UTC)'), dayBars(t.per_day));
    const rows = t.matches.map((m) => {
      const tr = el('tr', { dataset: { matchId: String(m.match_id) } },
        el('td', { 'data-h': 'When' }, fmtTime(m.at_ms)),
        el('td', { 'data-h': 'Candidate' }, el('div', { class: 'strong' }, m.marketplace + ' / ' + m.listing_id),
          m.title ? el('div', { class: 'title' }, m.title) : null),
        el('td', { 'data-h': 'Seller' }, m.seller_id || '—'),
        el('td', { 'data-h': 'Verdict' }, badge('verdict', m.takedown_verdict || m.verdict)),
        el('td', { class: 'num', 'data-h': 'Score' }, fmtScore(m.takedown_score !== null ? m.takedown_score : m.score)),
        el('td', { 'data-h': 'Label' }, badge('label', m.label)),
        el('td', { 'data-h': 'Source' }, m.source),
        el('td', {}, el('a', { class: 'open button', href: '#/match/' + m.match_id }, 'Open')));
      return tr;
    });
    const table = el('section', { class: 'card' }, el('h2', {}, 'Matches, newest first'),
      rows.length
        ? el('div', { class: 'table-wrap' }, el('table', { class: 'matches timeline' },
          el('thead', {}, el('tr', {}, ['When', 'Candidate', 'Seller', 'Verdict', 'Score', 'Label', 'Source', ''].map((h) => el('th', {}, h)))),
          el('tbody', {}, rows)))
        : el('p', { class: 'muted' }, 'None.'));
    box.replaceChildren(backLink(), info, chart, table);
    // Heights set through the CSSOM (the policy forbids inline style attributes).
    for (const f of box.querySelectorAll('.bar .fill')) f.style.height = (Number(f.dataset.h) * 0.78).toFixed(1) + '%';
  }

  // ---- routing ----------------------------------------------------------------------------
  function route() {
    const h = location.hash || '#/';
    let m;
    if ((m = /^#\/match\/(\d+)$/.exec(h))) return showMatch(m[1]);
    if ((m = /^#\/takedown\/(\d+)$/.exec(h))) return showTakedown(m[1]);
    const q = h.indexOf('?');
    return showList(new URLSearchParams(q >= 0 ? h.slice(q + 1) : ''));
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('#login-form').addEventListener('submit', signIn);
    $('#logout').addEventListener('click', logout);
    $('#logout').hidden = !sessionStorage.getItem(KEY);
    $('#select-all').addEventListener('change', selectAll);
    $('#bulk-apply').addEventListener('click', bulkReview);
    $('#download-csv').addEventListener('click', downloadCsv);
    $('#bulk-reviewer').value = localStorage.getItem('relist.reviewer') || '';
    $('#filters').addEventListener('submit', (e) => {
      e.preventDefault();
      const p = filtersFromForm();
      const target = '#/' + (p.toString() ? '?' + p.toString() : '');
      if (location.hash === target) { list.key = null; route(); } else location.hash = target;
    });
    $('#reset-filters').addEventListener('click', () => {
      $('#filters').reset();
      if (location.hash === '#/' || location.hash === '') { list.key = null; route(); } else location.hash = '#/';
    });
    $('#next').addEventListener('click', () => {
      if (!list.next) return;
      list.tokens[list.page + 1] = list.next;
      list.page += 1;
      loadPage(new URLSearchParams(list.key));
      window.scrollTo(0, 0);
    });
    $('#prev').addEventListener('click', () => {
      if (list.page === 0) return;
      list.page -= 1;
      loadPage(new URLSearchParams(list.key));
      window.scrollTo(0, 0);
    });
    window.addEventListener('hashchange', route);
    loadStats();
    route();
  });
})();
