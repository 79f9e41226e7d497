#!/bin/sh
# Regenerates the bundled demo media in ./cmaf (see README.md for the why).
# The file list is fixed: if it changes, update the table in ../media.rs.
set -eu
cd "$(dirname "$0")"
rm -rf cmaf
mkdir cmaf
cd cmaf

ffmpeg -hide_banner -loglevel error -y \
  -f lavfi -i "testsrc2=size=320x180:rate=25:duration=12" \
  -itsoffset 0.032 -f lavfi -i "sine=frequency=440:beep_factor=4:sample_rate=32000:duration=11.968" \
  -f lavfi -i "testsrc2=size=640x360:rate=25:duration=12" \
  -map 0:v -map 1:a -map 2:v -map_metadata -1 -fflags +bitexact -flags +bitexact \
  -c:v libx264 -profile:v main -preset medium -pix_fmt yuv420p -bf 0 -threads 1 \
  -b:v 120k -maxrate 150k -bufsize 300k \
  -b:v:1 350k -maxrate:v:1 440k -bufsize:v:1 880k \
  -g 50 -keyint_min 50 -sc_threshold 0 \
  -c:a aac -b:a 64k -ac 1 -ar 32000 \
  -f dash -seg_duration 2 -use_template 1 -use_timeline 0 \
  -hls_playlist 1 -hls_master_name master.m3u8 \
  -init_seg_name 'init-$RepresentationID$.m4s' \
  -media_seg_name 'seg-$RepresentationID$-$Number%03d$.m4s' \
  -adaptation_sets "id=0,streams=0,2 id=1,streams=1" \
  manifest.mpd

# ffmpeg stamps wall-clock PROGRAM-DATE-TIMEs (meaningless for VOD, and they
# would make every regeneration differ) and omits the VOD playlist type.
for p in media_*.m3u8; do
  sed -e '/^#EXT-X-PROGRAM-DATE-TIME:/d' \
      -e 's/^#EXT-X-TARGETDURATION:.*/&\n#EXT-X-PLAYLIST-TYPE:VOD/' \
      "$p" > "$p.tmp"
  mv "$p.tmp" "$p"
done

# ffmpeg's BANDWIDTH is the nominal bit rate (-b:v plus the audio's); RFC 8216
# wants the peak segment bit rate, the highest segment's bits per second of
# its #EXTINF, of the variant plus its audio rendition. Segments are one
# target duration long, so the peak is that of the largest one.
peak() {
  max=0
  while IFS= read -r line; do
    case $line in
      '#EXTINF:'*) d=${line#\#EXTINF:}; d=${d%%,*} ;;
      '#'* | '') ;;
      *)
        r=$(awk -v b="$(wc -c < "$line")" -v d="$d" \
          'BEGIN { r = b * 8 / d; printf "%d", (r == int(r)) ? r : int(r) + 1 }')
        if [ "$r" -gt "$max" ]; then max=$r; fi ;;
    esac
  done < "$1"
  echo "$max"
}
audio=$(peak "$(sed -n 's/^#EXT-X-MEDIA:TYPE=AUDIO,.*URI="\([^"]*\)".*/\1/p' master.m3u8)")
inf=
while IFS= read -r line; do
  case $line in
    '#EXT-X-STREAM-INF:'*) inf=$line; continue ;;
  esac
  if [ -n "$inf" ]; then
    bw=$(($(peak "$line") + audio))
    printf '%s\n' "$inf" | sed "s/BANDWIDTH=[0-9]*/BANDWIDTH=$bw/"
    inf=
  fi
  printf '%s\n' "$line"
done < master.m3u8 > master.m3u8.tmp
mv master.m3u8.tmp master.m3u8
