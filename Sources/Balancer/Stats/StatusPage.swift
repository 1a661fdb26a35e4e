/// The page at `/`: pools, servers and their state, connection and byte rates, refreshed live
/// from `/stats` every two seconds. Self-contained (no external assets) so it works on an
/// isolated management network.
enum StatusPage {
    static let html = #"""
<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>convey</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d232a;background:#fafbfc}
h1{font-size:1.3em;margin:0 0 .2em} h2{font-size:1.05em;margin:1.4em 0 .4em}
.meta{color:#57606a} table{border-collapse:collapse;min-width:60%;background:#fff}
th,td{border:1px solid #d0d7de;padding:.3em .6em;text-align:right} th{background:#f0f3f6}
td:first-child,th:first-child{text-align:left}
.up{color:#116329;font-weight:600}.down{color:#cf222e;font-weight:600}.drain{color:#9a6700;font-weight:600}.standby{color:#57606a;font-weight:600}
pre{background:#fff;border:1px solid #d0d7de;padding:.6em;overflow:auto;max-height:20em}
</style></head><body>
<h1>convey</h1><div class="meta" id="meta">loading…</div>
<h2>Frontends</h2><table id="fe"></table>
<div id="pools"></div>
<h2>Data plane</h2><pre id="dp">–</pre>
<script>
let prev=null, prevT=0;
const fmt=n=>n>=1e9?(n/1e9).toFixed(2)+" G":n>=1e6?(n/1e6).toFixed(2)+" M":n>=1e3?(n/1e3).toFixed(1)+" k":String(Math.round(n));
const esc=s=>String(s).replace(/[&<>"]/g,c=>({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]));
function rate(cur,old,dt){return old===undefined||dt<=0?0:Math.max(0,(cur-old)/dt)}
async function tick(){
  let s; try{ s=await (await fetch("stats",{cache:"no-store"})).json(); }catch(e){ document.getElementById("meta").textContent="stats unavailable: "+e; return; }
  const now=performance.now()/1000, dt=prev?now-prevT:0;
  document.getElementById("meta").textContent=`mode ${s.mode} · version ${s.version} · up ${Math.round(s.uptime_seconds)} s · ${s.current_connections} open connections · ${s.total_connections} total`;
  let fe="<tr><th>frontend</th><th>listen</th><th>pool</th><th>balance</th><th>open</th><th>conn/s</th><th>tx B/s</th><th>rx B/s</th><th>no backend</th><th>over limit</th><th>denied</th><th>queued</th><th>queue timeouts</th><th>queue full</th><th>bad PROXY header</th><th>servers full</th></tr>";
  for(const [n,f] of Object.entries(s.frontends)){const o=prev&&prev.frontends[n]||{};
    fe+=`<tr><td>${esc(n)}</td><td>${esc(f.listen_addr)}</td><td>${esc(f.backend)}</td><td>${f.balance}${f.on_backup?" (on backup)":""}</td><td>${f.current_connections}</td><td>${fmt(rate(f.total_connections,o.total_connections,dt))}</td><td>${fmt(rate(f.bytes_tx,o.bytes_tx,dt))}</td><td>${fmt(rate(f.bytes_rx,o.bytes_rx,dt))}</td><td>${f.no_backend}</td><td>${f.over_limit}</td><td>${f.denied}</td><td>${f.queued}</td><td>${f.queue_timeouts}</td><td>${f.queue_full}</td><td>${f.bad_proxy_header}</td><td>${f.servers_full}</td></tr>`;}
  document.getElementById("fe").innerHTML=fe;
  let pools="";
  for(const [p,b] of Object.entries(s.backends)){
    pools+=`<h2>Pool ${esc(p)}</h2><table><tr><th>server</th><th>address</th><th>state</th><th>weight</th><th>open</th><th>limit</th><th>total</th><th>conn/s</th><th>tx B/s</th><th>rx B/s</th><th>connect failures</th><th>last check</th></tr>`;
    for(const [n,d] of Object.entries(b.server_detail||{})){const o=prev&&prev.backends[p]&&prev.backends[p].server_detail[n]||{};
      pools+=`<tr><td>${esc(n)}</td><td>${d.host?esc(d.host)+" ":""}${esc(d.addr)}${d.check_port?` (checks on port ${d.check_port})`:""}</td><td class="${d.state}">${d.state}${d.operator_drain?" (by the operator)":""}${d.backup?" (backup)":""}${d.healthy?"":" (failing checks)"}</td><td>${d.weight}${d.slow_start_percent<100?` (slow start ${d.slow_start_percent}%)`:""}</td><td>${d.current_connections}</td><td>${d.max_connections?d.max_connections:"–"}</td><td>${d.total_connections}</td><td>${fmt(rate(d.total_connections,o.total_connections,dt))}</td><td>${fmt(rate(d.bytes_tx,o.bytes_tx,dt))}</td><td>${fmt(rate(d.bytes_rx,o.bytes_rx,dt))}</td><td>${d.connect_failures}</td><td>${esc(d.last_check||"")}</td></tr>`;}
    pools+="</table>";}
  document.getElementById("pools").innerHTML=pools;
  document.getElementById("dp").textContent=s.dataplane?JSON.stringify(s.dataplane,null,2):"–";
  prev=s; prevT=now;
}
tick(); setInterval(tick,2000);
</script></body></html>
"""#
}
