import streamlit as st
st.title("4_clusters")
st.info("coming")
